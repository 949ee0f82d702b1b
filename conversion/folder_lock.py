"""A lock file that keeps a second process out of a folder another one is writing (a run folder, a data cache).

The lock is a file created exclusively, holding its owner's pid and host. A lock whose owner has died on this
host (a killed run) is taken over with a message; a live owner, or one on another host that cannot be checked,
makes the second process stop with `FolderInUseError`. The lock is removed when its holder's block ends.
"""

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".hf_hope.lock"


class FolderInUseError(RuntimeError):
    """Another live process holds the folder's lock."""


@contextmanager
def folder_lock(folder: str | os.PathLike, lock_path: str | os.PathLike | None = None) -> Iterator[Path]:
    """Hold the lock of `folder` (its `.hf_hope.lock`, or `lock_path`) for the block; yields the folder."""
    folder = Path(folder)
    path = Path(lock_path) if lock_path is not None else folder / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    while True:
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            _take_over_if_stale(folder, path)
    with os.fdopen(descriptor, "w") as file:
        json.dump(owner, file)
    try:
        yield folder
    finally:
        if _owner(path) == owner:
            path.unlink(missing_ok=True)


def refuse_if_in_use(folder: str | os.PathLike, lock_path: str | os.PathLike | None = None) -> None:
    """Raise `FolderInUseError` if a live process holds the lock of `folder`; reads only, so it may come first.

    A run checks this before its slow, read-only preparation (tokenizing every task), so that a folder in use is
    refused at once; `folder_lock` checks again when it takes the lock.
    """
    folder = Path(folder)
    path = Path(lock_path) if lock_path is not None else folder / LOCK_NAME
    owner = _owner(path)
    if owner is not None and (owner.get("host") != socket.gethostname() or _alive(owner.get("pid"))):
        raise _in_use(folder, path, owner)


def _in_use(folder: Path, path: Path, owner: dict) -> FolderInUseError:
    return FolderInUseError(
        f"{folder} is in use by process {owner.get('pid')} on {owner.get('host')} (lock file {path}). Wait for "
        "it to finish or use another folder; if that process no longer runs, delete the lock file."
    )


def _take_over_if_stale(folder: Path, path: Path) -> None:
    """Remove the lock at `path` if its owner is gone; raise `FolderInUseError` if it may still be working."""
    owner = _owner(path)
    if owner is None:  # being written this instant, or emptied by a crash while it was written
        if time.time() - _mtime(path, default=time.time()) < 5:
            time.sleep(0.1)
            return
    elif owner.get("host") != socket.gethostname() or _alive(owner.get("pid")):
        raise _in_use(folder, path, owner)
    print(f"Taking over {path}: the process that held it ({owner}) is gone.", file=sys.stderr)
    path.unlink(missing_ok=True)


def _owner(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


def _mtime(path: Path, default: float) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return default
