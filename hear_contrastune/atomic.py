"""Atomic outputs: a file or folder is either complete or absent, never half-written.

Every output is written under a temporary name in the same directory and then renamed, which
is atomic on POSIX filesystems, so a killed job never leaves a file that looks complete.
"""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are ordinary files
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike[str], carry: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds.
    Files of the old folder matching a `carry` pattern (outputs of a later stage kept beside
    this one's, still valid for what the block rewrote) move into the new one first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            for pattern in carry:
                for kept in path.glob(pattern):
                    if kept.is_file() and not (tmp / kept.name).exists():
                        os.replace(kept, tmp / kept.name)
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data`, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_json_or_none(path: str | os.PathLike[str]) -> Any:
    """A JSON file this tool wrote, or None when it is absent or unreadable (a cache miss)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
