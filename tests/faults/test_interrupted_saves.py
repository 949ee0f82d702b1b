"""Saves that must not tear: killed (`os._exit`, as under `kill -9`) or out of disk space half-way through, the
folder then holds the old state or the new one, and a mixed or damaged adapter pair is refused.
"""

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hf_hope
from hf_hope.clock.online_learner import LEARNER_STATE_NAME, OnlineLearner
from hf_hope.conversion import CMS_CONFIG_NAME, CMS_WEIGHTS_NAME, cms_adapter_state_dict
from hf_hope.conversion.atomic_write import recover_swapped_folder

from ..helpers import tiny_family_model
from .fault_helpers import LEVELS, assert_same_tensors, folder_bytes, killed, learner_that_saw_40_tokens

# Saves the adapter twice (other weights, another lr_scale), the second time dying at the os.replace call number
# CRASH_AT (0: after the save).
ADAPTER_CHILD = """
import os, sys, torch, hf_hope
from safetensors.torch import save_file
from hf_hope.conversion import cms_adapter_state_dict
from tests.helpers import tiny_family_model
folder, crash_at = sys.argv[1], int(sys.argv[2])
model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=[{"period": None}, {"period": 4}]))
def perturb(seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    return {name: tensor.contiguous() for name, tensor in cms_adapter_state_dict(model).items()}
save_file(perturb(1), folder + ".old.safetensors")
hf_hope.save_cms_adapter(model, folder)
save_file(perturb(2), folder + ".new.safetensors")
model.config.cms_adapter["levels"][1]["lr_scale"] = 0.5  # the new config differs from the old one too
real_replace, calls = os.replace, [0]
def dying_replace(source, target):
    calls[0] += 1
    if calls[0] == crash_at:
        os._exit(9)
    real_replace(source, target)
os.replace = dying_replace
hf_hope.save_cms_adapter(model, folder)
os._exit(9)
"""

# Saves a learner, learns more, then saves again and dies at the named point of the second save.
LEARNER_CHILD = """
import os, sys, pathlib, torch
from hf_hope import HopeForCausalLM
from hf_hope.clock import online_learner
from tests.helpers import tiny_config
folder, crash = pathlib.Path(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
learner = online_learner.OnlineLearner(HopeForCausalLM(tiny_config()), chunk_size=16, context_size=8)
learner.observe(torch.arange(3, 43))
learner.save(folder)
learner.observe(torch.arange(3, 67))
if crash == "after the model":
    online_learner.save_clock_state = lambda clock, path: os._exit(9)
else:  # between the two renames that swap the folders where they cannot be exchanged in one call
    from hf_hope.modeling import folder_swap
    folder_swap.exchange_paths = lambda first, second: False
    real_rename = pathlib.Path.rename
    def dying_rename(self, target):
        if pathlib.Path(target) == folder:
            os._exit(9)
        return real_rename(self, target)
    pathlib.Path.rename = dying_rename
learner.save(folder)
"""


@pytest.mark.parametrize(("crash_at", "survivor"), [(1, "old"), (2, "new"), (0, "new")])
def test_save_cms_adapter_killed_at_any_point_leaves_the_old_pair_or_the_new_one(tmp_path, crash_at, survivor):
    folder = tmp_path / "adapter"
    killed(ADAPTER_CHILD, str(folder), str(crash_at))
    model = hf_hope.load_cms_adapter(tiny_family_model("llama"), folder)
    assert_same_tensors(cms_adapter_state_dict(model), load_file(f"{folder}.{survivor}.safetensors"))
    assert model.config.cms_adapter["levels"][1]["lr_scale"] == {"old": 1.0, "new": 0.5}[survivor]
    hf_hope.save_cms_adapter(hf_hope.retrofit(tiny_family_model("llama")), folder)  # the next save tidies up
    assert sorted(path.name for path in folder.iterdir()) == sorted([CMS_CONFIG_NAME, CMS_WEIGHTS_NAME])


def test_an_adapter_pair_from_two_saves_is_refused(tmp_path):
    for name in ("first", "second"):
        hf_hope.save_cms_adapter(hf_hope.retrofit(tiny_family_model("llama")), tmp_path / name)
    (tmp_path / "first" / CMS_CONFIG_NAME).write_bytes((tmp_path / "second" / CMS_CONFIG_NAME).read_bytes())
    with pytest.raises(ValueError, match=rf"{CMS_WEIGHTS_NAME} and .*{CMS_CONFIG_NAME} come from different saves"):
        hf_hope.load_cms_adapter(tiny_family_model("llama"), tmp_path / "first")


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        (CMS_WEIGHTS_NAME, lambda data: data[: len(data) // 2], "is not a readable safetensors file"),
        (CMS_WEIGHTS_NAME, lambda data: os.urandom(len(data)), "is not a readable safetensors file"),
        (CMS_WEIGHTS_NAME, lambda data: b"", "is not a readable safetensors file"),
        (CMS_CONFIG_NAME, lambda data: data[: len(data) // 2], "is not valid JSON"),
        (CMS_CONFIG_NAME, lambda data: b"\xff\xfe" + os.urandom(64), "is not valid JSON"),
        (CMS_CONFIG_NAME, lambda data: b"[1, 2]", "holds a JSON list"),
    ],
)
def test_damaged_adapter_files_are_refused_naming_the_file_and_nothing_changes(tmp_path, name, damage, message):
    hf_hope.save_cms_adapter(hf_hope.retrofit(tiny_family_model("llama")), tmp_path)
    (tmp_path / name).write_bytes(damage((tmp_path / name).read_bytes()))
    before = folder_bytes(tmp_path)
    base = tiny_family_model("llama")
    with pytest.raises(ValueError, match=rf"{tmp_path / name}.*{message}"):
        hf_hope.load_cms_adapter(base, tmp_path)
    assert folder_bytes(tmp_path) == before
    assert not hasattr(base.config, "cms_adapter")


def test_an_adapter_config_without_its_base_model_is_a_clear_error(tmp_path):
    hf_hope.save_cms_adapter(hf_hope.retrofit(tiny_family_model("llama")), tmp_path)
    config = json.loads((tmp_path / CMS_CONFIG_NAME).read_text())
    del config["base_model"]
    (tmp_path / CMS_CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{CMS_CONFIG_NAME} does not describe the base model"):
        hf_hope.load_cms_adapter(tiny_family_model("llama"), tmp_path)


def saved_learner(folder: Path) -> OnlineLearner:
    model = hf_hope.HopeForCausalLM.from_pretrained(folder)
    learner = OnlineLearner(model, chunk_size=16, context_size=8)
    learner.load(folder)
    return learner


@pytest.mark.parametrize("crash", ["after the model", "between the renames"])
def test_online_learner_save_killed_midway_leaves_the_previous_save_whole(tmp_path, crash):
    folder = tmp_path / "learner"
    killed(LEARNER_CHILD, str(folder), crash)
    recover_swapped_folder(folder)  # what the next save or load does first
    learner = saved_learner(folder)
    assert learner.tokens_seen == 40  # the first save's count, with the first save's model
    reference_weights = learner_that_saw_40_tokens().model.state_dict()
    assert all(torch.equal(tensor, reference_weights[name]) for name, tensor in learner.model.state_dict().items())
    assert not list(tmp_path.glob(".learner.previous-*"))  # the previous save is back in place


def test_online_learner_save_replaces_the_folder_in_one_step(tmp_path):
    learner = learner_that_saw_40_tokens()
    learner.save(tmp_path / "learner")
    learner.observe(torch.arange(3, 35))
    learner.save(tmp_path / "learner")
    assert saved_learner(tmp_path / "learner").tokens_seen == 72
    assert (tmp_path / "learner" / LEARNER_STATE_NAME).is_file()
    assert [path.name for path in tmp_path.iterdir()] == ["learner"]


def test_a_full_disk_during_save_cms_adapter_keeps_the_old_adapter(tmp_path, monkeypatch):
    from hf_hope.conversion import atomic_write

    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS))
    hf_hope.save_cms_adapter(model, tmp_path)
    before = folder_bytes(tmp_path)
    real_save_file = atomic_write.save_file

    def full_disk(tensors, path, metadata=None):
        real_save_file(tensors, path, metadata=metadata)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic_write, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        hf_hope.save_cms_adapter(model, tmp_path)
    assert folder_bytes(tmp_path) == before  # the old pair, and no staged file left


def test_a_full_disk_during_a_folder_save_keeps_the_old_folder(tmp_path, monkeypatch):
    learner = learner_that_saw_40_tokens()
    learner.save(tmp_path / "learner")
    before = folder_bytes(tmp_path / "learner")
    learner.observe(torch.arange(3, 35))
    real_save = torch.save

    def full_disk(state, path, *arguments, **keywords):
        real_save(state, path, *arguments, **keywords)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        learner.save(tmp_path / "learner")
    assert folder_bytes(tmp_path / "learner") == before
    assert [path.name for path in tmp_path.iterdir()] == ["learner"]  # the staging folder is gone
