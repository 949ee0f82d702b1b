"""Tiny HOPE and CMS-adapter family models built offline for the tests, and a small `Trainer` set-up."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2Config,
    PretrainedConfig,
    PreTrainedModel,
    TrainingArguments,
)

import hf_hope


def tiny_config(**overrides) -> hf_hope.HopeConfig:
    """A HOPE config small enough for float64 tests on a CPU."""
    values = {
        "vocab_size": 97,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_heads": 2,
        "chunk_size": 4,
        "cms_levels": [{"intermediate_size": 48, "period": 1}, {"intermediate_size": 24, "period": 4}],
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": None,
    }
    values.update(overrides)
    return hf_hope.HopeConfig(**values)


def tiny_model(dtype: torch.dtype = torch.float64, seed: int = 0, **overrides) -> hf_hope.HopeForCausalLM:
    """A randomly initialised `HopeForCausalLM` in eval mode, with memories that move visibly in context."""
    torch.manual_seed(seed)
    model = hf_hope.HopeForCausalLM(tiny_config(**overrides)).to(dtype).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mixer.eta_bias.fill_(2.0)
            layer.mixer.alpha_bias.fill_(3.0)
            layer.mixer.momentum_logit.fill_(1.0)
            layer.mixer.memory_w1.normal_(0, 0.3)
    return model


def tiny_family_config(model_type: str, num_hidden_layers: int = 2) -> PretrainedConfig:
    """A small config of one CMS-adapter family (hidden 32, FFN width 64)."""
    tokens = {"vocab_size": 128, "bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    if model_type == "gpt2":
        return GPT2Config(**tokens, n_embd=32, n_layer=num_hidden_layers, n_head=4, n_inner=64, n_positions=64)
    common = {**tokens, "num_hidden_layers": num_hidden_layers, "max_position_embeddings": 64}
    attention = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}
    if model_type in ("qwen3", "gemma", "gemma2", "gemma3_text"):
        attention["head_dim"] = 8
    return AutoConfig.for_model(model_type, **common, **attention)


def tiny_family_model(model_type: str, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised causal LM of `model_type` in float32 and eval mode."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_family_config(model_type)).eval()


class RepeatedBatch(Dataset):
    """The same few sequences again and again: a model that learns must drive their loss down."""

    def __init__(self, sequences: torch.Tensor, repeats: int) -> None:
        self.sequences, self.repeats = sequences, repeats

    def __len__(self) -> int:
        return len(self.sequences) * self.repeats

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sequence = self.sequences[index % len(self.sequences)]
        return {"input_ids": sequence, "labels": sequence}


def training_arguments(output_dir, max_steps: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """`||actual - expected|| / ||expected||` (Frobenius norms, in float64); a non-finite `actual` fails clearly."""
    actual, expected = actual.double(), expected.double()
    assert torch.isfinite(actual).all(), "non-finite values: an output was left unwritten or diverged"
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-300)).item()


# `hf-hope continual` flags for a quick run of the tiny Llama of the `tiny_dir` fixture on the packaged excerpts.
QUICK_TINY = ["--quick", "--use_cpu", "--steps_per_task", "2", "--learning_rate", "1e-2"]
QUICK_TINY += ["--cms_periods", "2", "1", "--cms_width", "16", "--block_size", "32"]

WITHOUT_HF_HOPE = """import sys
sys.modules["hf_hope"] = None  # any import of hf_hope now raises ImportError
try:
    import hf_hope
    raise SystemExit("hf_hope should not be importable here")
except ImportError:
    pass
"""


def run_without_hf_hope(code: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run `code` in a fresh interpreter where `import hf_hope` raises ImportError; returns its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_HF_HOPE + code],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
