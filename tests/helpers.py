"""Tiny HOPE configurations and models built offline for the tests."""

import torch

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
