"""Checkpoints (docs/design.md, invariant 4): save/load, remote-code load without hf_hope, hub cache, mismatches."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

import hf_hope

from ..helpers import run_without_hf_hope, tiny_model

INPUT_IDS = [[5, 9, 33, 2, 71, 64, 8, 8, 8, 15, 90]]


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, torch.Tensor]:
    model = tiny_model(dtype=torch.float32)
    model.save_pretrained(tmp_path / "hope")
    with torch.no_grad():
        logits = model(torch.tensor(INPUT_IDS)).logits
    return tmp_path / "hope", logits


def test_save_writes_safetensors_auto_map_and_modeling_files(checkpoint):
    path, _ = checkpoint
    config = json.loads((path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_hope.HopeConfig",
        "AutoModel": "modeling_hope.HopeModel",
        "AutoModelForCausalLM": "modeling_hope.HopeForCausalLM",
    }
    assert (path / "model.safetensors").exists()
    modeling = Path(hf_hope.modeling.__file__).parent
    adapter_only = ("cms_adapter_", "modeling_cms_adapter")  # a retrofitted model's (tests/conversion/test_remote_code)
    hope_files = {module.name for module in modeling.glob("*.py")} - {"__init__.py"}
    hope_files = {name for name in hope_files if not name.startswith(adapter_only)}
    assert {module.name for module in path.glob("*.py")} == hope_files
    for name in hope_files:
        assert (path / name).read_text() == (modeling / name).read_text()


def test_from_pretrained_gives_identical_logits(checkpoint):
    path, logits = checkpoint
    loaded = AutoModelForCausalLM.from_pretrained(path)
    assert isinstance(loaded, hf_hope.HopeForCausalLM)
    with torch.no_grad():
        assert torch.equal(loaded(torch.tensor(INPUT_IDS)).logits, logits)
    assert isinstance(AutoModel.from_pretrained(path), hf_hope.HopeModel)


def test_from_pretrained_in_bfloat16(checkpoint):
    path, logits = checkpoint
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    with torch.no_grad():
        bf16_logits = loaded(torch.tensor(INPUT_IDS)).logits
    assert bf16_logits.dtype == torch.bfloat16
    torch.testing.assert_close(bf16_logits.float(), logits, rtol=0.1, atol=0.1)


def test_trust_remote_code_load_without_hf_hope(checkpoint, tmp_path):
    path, logits = checkpoint
    torch.save(logits, tmp_path / "expected.pt")
    code = f"""
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({str(path)!r}, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    logits = model(torch.tensor({INPUT_IDS})).logits
assert torch.equal(logits, torch.load({str(tmp_path / "expected.pt")!r})), "logits differ"
print("identical")
"""
    assert "identical" in run_without_hf_hope(code, {"HF_HOME": str(tmp_path / "hf_home")})


def test_repo_id_loads_from_offline_hub_cache(checkpoint, tmp_path):
    path, logits = checkpoint
    torch.save(logits, tmp_path / "expected.pt")
    hub_cache = tmp_path / "hub"
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / "models--hf-hope--tiny-hope"
    shutil.copytree(path, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    code = f"""
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained("hf-hope/tiny-hope", trust_remote_code=True)
with torch.no_grad():
    logits = model(torch.tensor({INPUT_IDS})).logits
assert torch.equal(logits, torch.load({str(tmp_path / "expected.pt")!r})), "logits differ"
print("identical")
"""
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "HF_HOME": str(tmp_path / "hf_home")}
    assert "identical" in run_without_hf_hope(code, env)


@pytest.mark.parametrize(
    ("change", "named_tensor"),
    [
        ({"num_hidden_layers": 3}, "model.layers.2."),
        ({"memory_expansion": 3}, "memory_w1"),
        ({"cms_levels": [{"intermediate_size": 40, "period": 1}, {"intermediate_size": 24, "period": 4}]}, "cms"),
    ],
)
def test_config_that_does_not_match_the_weights_is_refused(checkpoint, change, named_tensor):
    path, _ = checkpoint
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(ValueError, match="does not match") as error:
        AutoModelForCausalLM.from_pretrained(path)
    assert named_tensor in str(error.value)


@pytest.mark.parametrize("tied", [False, True])
def test_base_model_checkpoint_loads_into_the_causal_lm(tmp_path, tied):
    """A `HopeModel` checkpoint has no `lm_head`: the head is tied, or newly initialised and reported as transformers
    does (its load report lists the key as MISSING, "newly initialized"); the backbone is loaded exactly."""
    base = tiny_model(dtype=torch.float32, tie_word_embeddings=tied).model
    base.save_pretrained(tmp_path)
    with CaptureLogger(logging.get_logger("transformers.modeling_utils")) as captured:
        model, info = hf_hope.HopeForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    for name, tensor in base.state_dict().items():
        assert torch.equal(model.model.state_dict()[name], tensor), name
    head = model.lm_head.weight
    if tied:
        assert head is model.model.embed_tokens.weight
        assert not info["missing_keys"] and "MISSING" not in captured.out
    else:
        assert info["missing_keys"] == {"lm_head.weight"}
        assert "lm_head.weight" in captured.out and "newly initialized" in captured.out
        assert torch.isfinite(head).all() and 0.5 < head.std().item() / model.config.initializer_range < 1.5
    assert torch.isfinite(model(torch.tensor(INPUT_IDS)).logits).all()


def test_missing_backbone_weight_is_still_refused_for_the_causal_lm(tmp_path):
    base = tiny_model(dtype=torch.float32).model
    state = {name: tensor for name, tensor in base.state_dict().items() if "layers.1.mixer.memory_w2" not in name}
    base.save_pretrained(tmp_path, state_dict=state)
    with pytest.raises(ValueError, match="does not match") as error:
        hf_hope.HopeForCausalLM.from_pretrained(tmp_path)
    assert "model.layers.1.mixer.memory_w2" in str(error.value)
