"""Retrofitted folders carry the adapter's code (auto_map), so `trust_remote_code=True` loads them without hf_hope."""

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

import hf_hope

from ..helpers import run_without_hf_hope, tiny_family_model, tiny_model

INPUT_IDS = [[5, 17, 3, 99, 42, 7, 64, 2, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
MODELING = Path(hf_hope.modeling.__file__).parent
ADAPTER_ONLY_FILES = {
    f"{name}.py"
    for name in (
        "modeling_cms_adapter",
        "cms_adapter_config",
        "cms_adapter_families",
        "cms_adapter_ffn",
        "cms_adapter_lowrank",
        "cms_adapter_units",
    )
}
ADAPTER_FILES = ADAPTER_ONLY_FILES | {
    "checkpoint_errors.py",
    "folder_swap.py",
    "cms.py",
    "levels.py",
    "normalization.py",
}  # HOPE uses these too


def trained_retrofit(model_type: str, init: str = "zero") -> torch.nn.Module:
    """A tiny retrofitted model whose trainable parameters all moved away from their initial values, as in training."""
    model = hf_hope.retrofit(tiny_family_model(model_type), hf_hope.CMSConfig(init=init))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor(INPUT_IDS)).logits


def test_every_family_loads_with_trust_remote_code_where_hf_hope_cannot_be_imported(tmp_path):
    expected = {}
    for index, model_type in enumerate(hf_hope.SUPPORTED_MODEL_TYPES):
        model = trained_retrofit(model_type, init=("zero", "copy", "lowrank", "units")[index % 4])
        model.save_pretrained(tmp_path / model_type)
        expected[model_type] = (model.config.cms_adapter, logits(model))
    torch.save(expected, tmp_path / "expected.pt")
    code = f"""
import torch
from transformers import AutoModelForCausalLM
for model_type, (adapter, expected) in torch.load("expected.pt").items():
    model = AutoModelForCausalLM.from_pretrained(model_type, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    assert model.config.cms_adapter == adapter, model_type
    with torch.no_grad():
        assert torch.equal(model(input_ids=torch.tensor({INPUT_IDS})).logits, expected), model_type
    print("identical", model_type)
"""
    output = run_without_hf_hope(code, {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}, cwd=tmp_path)
    assert output.split() == [word for model_type in expected for word in ("identical", model_type)]


def test_a_retrofitted_folder_holds_auto_map_and_the_adapter_code(tmp_path):
    trained_retrofit("phi3").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "modeling_cms_adapter.CMSPhi3Config",
        "AutoModelForCausalLM": "modeling_cms_adapter.CMSPhi3ForCausalLM",
    }
    assert {path.name for path in tmp_path.glob("*.py")} == ADAPTER_FILES
    for name in ADAPTER_FILES:
        assert (tmp_path / name).read_text() == (MODELING / name).read_text(), name


def test_hf_hope_still_loads_its_own_classes_without_trust_remote_code(tmp_path):
    model = trained_retrofit("qwen2", init="copy")
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is type(model) and type(loaded).__module__ == "hf_hope.modeling.modeling_cms_adapter"
    assert torch.equal(logits(loaded), logits(model))


def test_unretrofit_leaves_no_auto_map_behind(tmp_path):
    """auto_map follows the config's class: a model turned plain again must not point at the adapter's code."""
    trained_retrofit("llama").save_pretrained(tmp_path / "retrofitted")
    plain = hf_hope.unretrofit(AutoModelForCausalLM.from_pretrained(tmp_path / "retrofitted"))
    assert getattr(plain.config, "auto_map", None) is None
    plain.save_pretrained(tmp_path / "plain")
    assert "auto_map" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    assert not list((tmp_path / "plain").glob("*.py"))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "plain", trust_remote_code=True)
    assert type(reloaded) is LlamaForCausalLM and torch.equal(logits(reloaded), logits(plain))


def test_a_hope_checkpoint_carries_none_of_the_adapter_code(tmp_path):
    tiny_model(dtype=torch.float32).save_pretrained(tmp_path)
    assert not {path.name for path in tmp_path.glob("*.py")} & ADAPTER_ONLY_FILES


def test_a_folder_loaded_as_remote_code_saves_a_folder_that_loads_again(tmp_path):
    """Tools may re-save what they loaded without hf_hope: the copy must carry the code and weights again."""
    model = trained_retrofit("gpt2")
    model.save_pretrained(tmp_path / "first")
    torch.save(logits(model), tmp_path / "expected.pt")
    code = f"""
import torch
from transformers import AutoModelForCausalLM
AutoModelForCausalLM.from_pretrained("first", trust_remote_code=True).save_pretrained("second")
model = AutoModelForCausalLM.from_pretrained("second", trust_remote_code=True)
with torch.no_grad():
    assert torch.equal(model(input_ids=torch.tensor({INPUT_IDS})).logits, torch.load("expected.pt"))
print("identical")
"""
    assert "identical" in run_without_hf_hope(
        code, {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}, cwd=tmp_path
    )
    assert {path.name for path in (tmp_path / "second").glob("*.py")} == ADAPTER_FILES
