"""`save_pretrained` of HOPE and of a retrofitted model killed (as under `kill -9`) over an earlier save.

transformers writes straight into the folder; our models write into a hidden sibling that replaces the folder,
keeping the files the save does not write (here a tokenizer file). On Linux the two folders are exchanged in one
system call. Wherever the save dies, the folder then loads as the old model or the new one, never a mix, and keeps
the tokenizer file; where the swap takes two renames, a kill between them leaves the old folder aside, and the
model class's `from_pretrained` puts it back; the next save deletes the staging folder a
killed save left.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hf_hope
from hf_hope.modeling.modeling_cms_adapter import CMSLlamaForCausalLM

from ..helpers import tiny_family_model
from .fault_helpers import REPOSITORY

# Saves the model with a tokenizer file beside it, changes every weight, saves again and dies at the named point of
# the second save (or not: "none"). Writes the two states' weights next to the folder, to compare with.
SAVE_CHILD = """
import os, sys, pathlib, torch, hf_hope
import transformers.modeling_utils as modeling_utils
from tests.helpers import tiny_family_model, tiny_model
kind, folder, crash = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
if kind == "hope":
    model = tiny_model()
else:
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=[{"period": None}, {"period": 4}]))
model.save_pretrained(folder)
(folder / "tokenizer_config.json").write_text('{"kept": true}')
torch.save(model.state_dict(), str(folder) + ".old.pt")
with torch.no_grad():
    for parameter in model.parameters():
        parameter.add_(0.5)
torch.save(model.state_dict(), str(folder) + ".new.pt")
if crash == "writing the weights":
    real_save = modeling_utils.safe_save_file
    def dying_save(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        data = pathlib.Path(filename).read_bytes()
        pathlib.Path(filename).write_bytes(data[: len(data) // 2])
        os._exit(9)
    modeling_utils.safe_save_file = dying_save
elif crash in ("before the swap", "after the swap"):
    from hf_hope.modeling import folder_swap
    real_exchange = folder_swap.exchange_paths
    def dying_exchange(first, second):
        if crash == "after the swap":
            real_exchange(first, second)
        os._exit(9)
    folder_swap.exchange_paths = dying_exchange
elif crash == "between the renames":  # where the folders cannot be exchanged in one call
    from hf_hope.modeling import folder_swap
    folder_swap.exchange_paths = lambda first, second: False
    real_rename = pathlib.Path.rename
    def dying_rename(self, target):
        if pathlib.Path(target) == folder:  # the staged folder renamed into place
            os._exit(9)
        return real_rename(self, target)
    pathlib.Path.rename = dying_rename
model.save_pretrained(folder)
"""


def save(kind: str, folder: Path, crash: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SAVE_CHILD, kind, str(folder), crash],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=300,
    )


def load(kind: str, folder: Path) -> torch.nn.Module:
    """The model class's own `from_pretrained`: it puts back a folder left aside between two renames (an Auto
    class reads the config before the class is known)."""
    return (hf_hope.HopeForCausalLM if kind == "hope" else CMSLlamaForCausalLM).from_pretrained(folder)


@pytest.mark.parametrize("kind", ["hope", "retrofit"])
@pytest.mark.parametrize(
    ("crash", "survivor"),
    [
        ("writing the weights", "old"),
        ("before the swap", "old"),
        ("after the swap", "new"),
        ("between the renames", "old"),
        ("none", "new"),
    ],
)
def test_save_pretrained_killed_over_an_earlier_save_leaves_the_old_model_or_the_new(tmp_path, kind, crash, survivor):
    folder = tmp_path / "model"
    finished = save(kind, folder, crash)
    assert finished.returncode == (0 if crash == "none" else 9), finished.stderr[-3000:]
    loaded = load(kind, folder).state_dict()
    expected = torch.load(f"{folder}.{survivor}.pt")
    assert all(torch.equal(loaded[name], expected[name]) for name in expected)
    assert (folder / "tokenizer_config.json").read_text() == '{"kept": true}'
    load(kind, folder).save_pretrained(folder)  # the next save clears what a killed one left beside the folder
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model", "model.new.pt", "model.old.pt"]
    assert (folder / "tokenizer_config.json").read_text() == '{"kept": true}'
    assert sorted(path.name for path in folder.glob("*.safetensors")) == ["model.safetensors"]


def test_a_save_into_a_symbolic_link_to_a_folder_writes_into_its_target(tmp_path):
    target, link = tmp_path / "storage" / "model", tmp_path / "model"
    target.mkdir(parents=True)
    (target / "tokenizer_config.json").write_text("{}")
    link.symlink_to(target, target_is_directory=True)
    model = hf_hope.retrofit(tiny_family_model("llama"))
    model.save_pretrained(link)
    assert (
        link.is_symlink() and (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").exists()
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model", "storage"]
    assert sorted(path.name for path in target.parent.iterdir()) == ["model"]
