"""Atomic writes, the one helper every layer uses: build a file or folder under a temporary name, then rename it.

An interrupted writer never leaves a half-written file or folder behind: the destination holds the old content or
the new, never a mix. An existing non-empty folder is replaced only when asked, as a whole, and never when it
contains the working or home folder. The folder swap itself is `modeling/folder_swap.py`, which the models'
`save_pretrained` uses too.
"""

import errno
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from ..modeling.folder_swap import recover_swapped_folder, sibling_folder, swap_in

__all__ = [
    "atomic_file",
    "check_output_dir",
    "move_into_place",
    "recover_swapped_folder",
    "sibling_folder",
    "write_folder",
    "write_safetensors",
    "write_text_atomically",
]


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; it replaces `path` when the block ends, and is removed on error."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:12]}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """`safetensors.torch.save_file`, whose I/O failures (a full disk) are raised as the `OSError` they are.

    safetensors reports them as a `SafetensorError` without the file's name; this names it and keeps the errno.
    """
    try:
        save_file(tensors, path, metadata=metadata)
    except SafetensorError as error:
        code = re.search(r"os error (\d+)", str(error))
        raise OSError(int(code.group(1)) if code else errno.EIO, f"Could not write {path}: {error}") from error


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through `atomic_file`."""
    with atomic_file(path) as temporary:
        temporary.write_text(text)


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse a file, a non-empty folder (unless `overwrite`), and ever replacing the working or home folder."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is not a folder.")
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{output_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it.")
    resolved = output_dir.resolve()
    for protected in (Path.cwd().resolve(), Path.home().resolve()):
        if protected == resolved or resolved in protected.parents:
            raise ValueError(f"Refusing to replace {output_dir}: it contains {protected}.")


def move_into_place(staging: Path, output_dir: Path, overwrite: bool) -> None:
    """Rename the finished `staging` folder to `output_dir`, replacing an existing one only if allowed."""
    check_output_dir(output_dir, overwrite)  # the folder may have changed while it was being written
    swap_in(staging, output_dir)


def write_folder(output_dir: str | Path, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Call `write(staging)` on a hidden sibling folder and rename it to `output_dir` when it returns."""
    output_dir = recover_swapped_folder(output_dir)
    check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = sibling_folder(output_dir, "partial")
    try:
        write(staging)
        move_into_place(staging, output_dir, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir
