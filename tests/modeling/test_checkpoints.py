"""Checkpoints (docs/design.md, invariant 4): save/load, remote-code load without hf_hope, hub cache, mismatches."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

import hf_hope

from ..helpers import tiny_model

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
    for module in Path(hf_hope.modeling.__file__).parent.glob("*.py"):
        if module.name != "__init__.py":
            assert (path / module.name).read_text() == module.read_text()


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


def run_isolated(code: str, env: dict[str, str]) -> str:
    """Run `code` in a fresh interpreter where `import hf_hope` fails; returns its stdout."""
    blocker = "import sys; sys.modules['hf_hope'] = None\n"
    result = subprocess.run(
        [sys.executable, "-c", blocker + code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_trust_remote_code_load_without_hf_hope(checkpoint, tmp_path):
    path, logits = checkpoint
    torch.save(logits, tmp_path / "expected.pt")
    code = f"""
import torch
from transformers import AutoModelForCausalLM
try:
    import hf_hope
    raise SystemExit("hf_hope should not be importable here")
except ImportError:
    pass
model = AutoModelForCausalLM.from_pretrained({str(path)!r}, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    logits = model(torch.tensor({INPUT_IDS})).logits
assert torch.equal(logits, torch.load({str(tmp_path / "expected.pt")!r})), "logits differ"
print("identical")
"""
    assert "identical" in run_isolated(code, {"HF_HOME": str(tmp_path / "hf_home")})


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
    assert "identical" in run_isolated(code, env)


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
