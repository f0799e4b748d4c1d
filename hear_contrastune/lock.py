"""One writer per output folder: an exclusive lock held for the life of the process.

Two `tune` processes on one run folder would both train and interleave their logs. The lock is
`fcntl.flock` on a file inside the folder, so the kernel drops it the moment its process ends,
however it ends: a folder left by a killed process resumes without anyone deleting a stale
lock. The file keeps the holder's pid and command, so the second process can say who holds it.
"""

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hear_contrastune.errors import UserError

LOCK_FILE = ".contrastune.lock"


@contextmanager
def exclusive(folder: Path, option: str = "--out", name: str = LOCK_FILE,
              wait: bool = False) -> Iterator[None]:
    """Hold `folder` (created if missing) for the block; a UserError naming the holder if
    another process holds it, or, with `wait`, once it lets go. `name` picks another lock
    file in the folder, for a lock on one part of it (a search's trial, its ask queue)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / name, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise UserError(f"{option} {folder}: in use by {holder}; wait for it to finish or "
                            "choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv[:2])})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def is_lock(path: Path) -> bool:
    """Whether `path` is a run folder's lock file, which a folder's contents checks ignore."""
    return path.name == LOCK_FILE
