"""Killing a command mid-run, as a power cut would: the resume tests' one way to do it."""

import subprocess
import time
from pathlib import Path


def kill_once_written(cmd: list[str], cwd: Path | str, path: Path, timeout: float = 300,
                      holding: str = "") -> bool:
    """Start `cmd`, SIGKILL it as soon as `path` exists (a run's first resume point) and holds
    the text `holding`, and say whether it was still running then (False: it ended, or that
    never came)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout

    def written() -> bool:
        return path.exists() and holding in path.read_text(errors="replace")

    while not written() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    alive = written() and proc.poll() is None
    proc.kill()  # SIGKILL: no clean-up of any kind
    proc.wait()
    return alive
