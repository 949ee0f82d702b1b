"""Saves on a real full disk: a size-limited tmpfs mounted for the test (skipped where mounting is not allowed;
`test_interrupted_saves.py` also simulates ENOSPC half-way through a write, which needs no privileges).

Each save first writes an old state that fits, then the disk is filled, then a new save must fail with ENOSPC and
leave the old files byte-identical, with no temporary file or staging folder behind; with the space back, the
same save succeeds.
"""

import errno
import subprocess
from pathlib import Path

import pytest
import torch

import hf_hope
from hf_hope.clock.state_file import save_clock_state
from hf_hope.conversion.atomic_write import write_text_atomically

from ..helpers import tiny_family_model
from .fault_helpers import LEVELS, folder_bytes, learner_that_saw_40_tokens

DISK_SIZE = "8m"


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here ({mounted.stderr.strip() or mounted.returncode})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def fill(disk: Path) -> Path:
    """Write a filler file until the disk is full; deleting it gives the space back."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def everything_in(disk: Path) -> dict[str, bytes]:
    return {str(path.relative_to(disk)): path.read_bytes() for path in sorted(disk.rglob("*")) if path.is_file()}


def test_save_cms_adapter_on_a_full_disk_keeps_the_old_adapter(small_disk):
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS))
    folder = small_disk / "adapter"
    hf_hope.save_cms_adapter(model, folder)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(1.0)
    filler = fill(small_disk)
    before = everything_in(small_disk)
    with pytest.raises(OSError, match=r"Could not write .*adapter.*cms_adapter\.safetensors.*No space left on device"):
        hf_hope.save_cms_adapter(model, folder)
    assert everything_in(small_disk) == before
    filler.unlink()
    hf_hope.save_cms_adapter(model, folder)
    assert folder_bytes(folder) != {name: before[f"adapter/{name}"] for name in folder_bytes(folder)}


def test_online_learner_save_on_a_full_disk_keeps_the_old_save(small_disk):
    learner = learner_that_saw_40_tokens()
    learner.save(small_disk / "learner")
    learner.observe(torch.arange(3, 35))
    filler = fill(small_disk)
    before = everything_in(small_disk)
    with pytest.raises(OSError, match="No space left on device"):
        learner.save(small_disk / "learner")
    assert everything_in(small_disk) == before
    assert sorted(path.name for path in small_disk.iterdir()) == ["filler", "learner"]  # no staging folder left
    filler.unlink()
    learner.save(small_disk / "learner")


@pytest.mark.parametrize("what", ["clock state", "results file"])
def test_a_single_file_save_on_a_full_disk_keeps_the_old_file(small_disk, what):
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS))
    clock = hf_hope.LevelClock(model)
    path = small_disk / ("level_clock.safetensors" if what == "clock state" else "results.json")

    def save() -> None:
        if what == "clock state":
            save_clock_state(clock, path)
        else:
            write_text_atomically(path, '{"runs": {}}' + " " * 200_000)

    save()
    filler = fill(small_disk)
    before = everything_in(small_disk)
    clock.step = 5
    with pytest.raises(OSError, match=r"No space left on device") as raised:
        save()
    assert raised.value.errno == errno.ENOSPC
    if what == "clock state":
        assert "level_clock.safetensors" in str(raised.value)
    assert everything_in(small_disk) == before
    filler.unlink()
    save()
