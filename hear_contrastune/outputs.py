"""Where a command may write: checked before any work, so a mistake costs one line, not a run.

An output must be creatable (its nearest existing ancestor writable, and not a file where a
folder goes) and must not overlap an input: writing into a task folder, or replacing a folder
that holds one, would destroy what the command reads. `atomic` then makes each output complete
or absent.
"""

import os
from collections.abc import Iterable
from pathlib import Path

from hear_contrastune.errors import UserError


def overlaps(a: Path, b: Path) -> bool:
    """Whether two paths are the same or one lies inside the other (after resolving links)."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or a in b.parents or b in a.parents


def check_output_dir(out: Path, option: str, inputs: Iterable[Path] = ()) -> None:
    """Refuse a folder output that cannot be written or overlaps one of `inputs`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out}: exists and is not a directory")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option} {out}: cannot write there ({existing} is not writable)")
    for path in inputs:
        if overlaps(out, path):
            raise UserError(f"{option} {out}: overlaps the input {path}; writing there would "
                            "overwrite what is read. Choose an output outside it")
