"""The `contrastune` command run in this process, through click's CliRunner: the same command
line, parsed and run by the same code, without a fresh interpreter's imports (torch, sklearn,
transformers: seconds a call). What only a separate process shows (a signal, a kill, a ulimit,
two processes at once) stays a subprocess; each command keeps at least one such test.

The result reads as subprocess.run's does: returncode, stdout, and stderr with the run notes
the command logs (as the CLI's logging.basicConfig puts them there) and, if it raised, the
traceback a real process would have printed, so "no traceback" still means something."""

import logging
import signal
import subprocess
import sys
import traceback

import torch
from click.testing import CliRunner

import cli


class _ToStderr(logging.Handler):
    """The CLI's basicConfig handler, writing to whatever sys.stderr is when a note is logged
    (CliRunner's capture while the command runs)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


def _flushing_denormals() -> bool:
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


def contrastune_here(*args: str) -> subprocess.CompletedProcess:
    """Run `contrastune ARGS` here; leave this process's settings as they were (the command sets
    a SIGTERM handler, the root logger's level and flush-denormal mode)."""
    root = logging.getLogger()
    handler = _ToStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    saved = (signal.getsignal(signal.SIGTERM), root.level, _flushing_denormals())
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # what basicConfig(level=INFO) would set with no handler here
    try:
        result = CliRunner().invoke(cli.main, list(args), prog_name="contrastune")
    finally:
        root.removeHandler(handler)
        signal.signal(signal.SIGTERM, saved[0])
        root.setLevel(saved[1])
        torch.set_flush_denormal(saved[2])
    stderr = result.stderr
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(["contrastune", *args], result.exit_code,
                                       result.stdout, stderr)
