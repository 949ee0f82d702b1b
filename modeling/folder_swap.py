"""Replace a folder by a finished one atomically (or in two renames, putting the old one back after a kill).

`save_pretrained` of HOPE and of retrofitted models writes into a hidden sibling folder and swaps it in (`staged`),
so a save killed part-way leaves the previous save whole: transformers alone writes straight into the folder, and
a kill there leaves a new config next to half a weights file. Files in the folder that the save does not write
(a tokenizer, a Trainer's optimizer and clock state) are carried into the new folder as hard links. Stdlib only:
this file is copied into checkpoints with the modeling code. `hf_hope.conversion.atomic_write` builds on it.
"""

import ctypes
import errno
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

# Weight files of an earlier save that the new save replaces rather than keeps (transformers' names, sharded or not).
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # from <fcntl.h> and <linux/fs.h>
_WEIGHT_FILE = re.compile(r"(model|pytorch_model)(-\d{5}-of-\d{5})?\.(safetensors|bin)(\.index\.json)?")


def sibling_folder(output_dir: Path, role: str) -> Path:
    """A new hidden folder next to `output_dir` (same file system, so renames are atomic; permissions per umask)."""
    sibling = output_dir.parent / f".{output_dir.name}.{role}-{uuid.uuid4().hex[:12]}"
    sibling.mkdir()
    return sibling


def swap_in(staging: Path, output_dir: Path) -> None:
    """Put the finished `staging` folder at `output_dir`; an existing one ends in `staging`, for the caller to delete.

    On Linux the two folders are exchanged in one system call, so `output_dir` never goes missing. Elsewhere the old
    folder goes first into a hidden `previous` sibling, deleted once the new folder is in place (put back by
    `recover_swapped_folder` if the process dies in between).
    """
    if not output_dir.exists():
        staging.rename(output_dir)
        return
    if exchange_paths(staging, output_dir):
        return
    previous = sibling_folder(output_dir, "previous")
    output_dir.replace(previous / output_dir.name)
    try:
        staging.rename(output_dir)
    except BaseException:
        (previous / output_dir.name).replace(output_dir)
        raise
    finally:
        if output_dir.exists():
            shutil.rmtree(previous, ignore_errors=True)


def exchange_paths(first: Path, second: Path) -> bool:
    """Exchange two paths atomically (Linux's `renameat2` with `RENAME_EXCHANGE`); False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # a C library older than glibc 2.28
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # a kernel or file system without the call
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def recover_swapped_folder(output_dir: str | os.PathLike) -> Path:
    """Put back the previous `output_dir` if a writer died between the two renames of `swap_in`.

    A process killed there leaves no `output_dir`, but the old one whole in a hidden `previous` sibling.
    """
    output_dir = Path(output_dir)
    if output_dir.exists():
        return output_dir
    kept = sorted(output_dir.parent.glob(f".{output_dir.name}.previous-*/{output_dir.name}"), key=_mtime)
    if kept:
        kept[-1].rename(output_dir)
        shutil.rmtree(kept[-1].parent, ignore_errors=True)
    return output_dir


def staged(save_directory: str | os.PathLike, save: Callable[[Path], object]) -> object:
    """Run `save(staging)` in a hidden sibling of `save_directory`, then swap it in; returns what `save` returned.

    The entries of the old folder that `save` did not write, other than an earlier save's weight files, are carried
    over (hard links, or copies where the file system has none), so the folder keeps everything but the model.
    Staging folders a killed save left beside it are deleted first.
    """
    save_directory = recover_swapped_folder(save_directory)
    save_directory.parent.mkdir(parents=True, exist_ok=True)
    for role in ("partial", "previous"):  # what a killed save left beside the folder
        for leftover in save_directory.parent.glob(f".{save_directory.name}.{role}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    staging = sibling_folder(save_directory, "partial")
    try:
        result = save(staging)
        if save_directory.is_dir():
            _carry_over(save_directory, staging)
        swap_in(staging, save_directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def staged_save_pretrained(save: Callable[..., object], save_directory: str | os.PathLike, *args, **kwargs) -> object:
    """`save(save_directory, *args, **kwargs)` (a `save_pretrained`) written through `staged`.

    Straight into the folder where a swap cannot apply: on processes other than the main one, onto a file (the
    save's own error), and for a folder that holds the working or home folder (it is never renamed away).
    """
    target = Path(save_directory).resolve()
    protected = any(target == folder or target in folder.parents for folder in (Path.cwd(), Path.home()))
    if not kwargs.get("is_main_process", True) or target.is_file() or protected:
        return save(save_directory, *args, **kwargs)
    if kwargs.get("push_to_hub"):
        kwargs.setdefault("repo_id", Path(save_directory).name)  # not the staging folder's name
    # Staged beside the resolved folder: a symbolic link to a folder stays a link, and its target gets the save.
    return staged(target, lambda staging: save(staging, *args, **kwargs))


def _carry_over(old: Path, new: Path) -> None:
    for entry in old.iterdir():
        target = new / entry.name
        if target.exists() or _WEIGHT_FILE.fullmatch(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, target)


def _link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime
