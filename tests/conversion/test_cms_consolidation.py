"""Consolidating a fast CMS level into a slower one: exact, silent after, recorded, refused when it can't be."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_hope import CMSConfig, consolidate_levels, parameter_levels, retrofit

from ..helpers import tiny_family_model

LEVELS = [{"period": None}, {"period": 4}, {"period": 1}]


def trained_levels(model_type: str = "llama", init: str = "zero") -> torch.nn.Module:
    """A retrofitted tiny model whose new levels have random, non-zero weights (as after training)."""
    sizes = {"intermediate_size": 8} if init == "zero" else {"rank": 2}
    model = retrofit(tiny_family_model(model_type).double(), CMSConfig(levels=LEVELS, init=init, **sizes))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".cms_levels." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.1)
    return model


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "phi3"])
def test_consolidation_keeps_the_function_and_silences_the_source(model_type):
    model = trained_levels(model_type)
    input_ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    before = model(input_ids=input_ids).logits

    consolidate_levels(model, source=3, target=2)

    torch.testing.assert_close(model(input_ids=input_ids).logits, before, rtol=1e-10, atol=1e-10)
    for name, parameter in model.named_parameters():
        if ".cms_levels.1." in name and name.endswith(("down_proj.weight", "c_proj.weight", "down_proj.bias")):
            assert not parameter.any(), name
    assert model.config.cms_adapter["levels"][1]["intermediate_size"] == 16
    assert model.config.cms_adapter["levels"][2]["intermediate_size"] == 8


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "phi3"])
def test_lowrank_consolidation_stacks_the_ranks_and_keeps_the_function(model_type, tmp_path):
    model = trained_levels(model_type, init="lowrank")
    input_ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    before = model(input_ids=input_ids).logits

    consolidate_levels(model, source=3, target=2)

    torch.testing.assert_close(model(input_ids=input_ids).logits, before, rtol=1e-10, atol=1e-10)
    ffn = next(
        module for name, module in model.named_modules() if name.endswith("layers.0.mlp") or name.endswith("h.0.mlp")
    )
    slow, fast = (level.mlp for level in ffn.cms_levels)
    assert slow.rank == 4 and fast.rank == 2 and fast.is_silent() and not slow.is_silent()
    assert all(parameter.requires_grad for parameter in slow.parameters())
    assert [level["rank"] for level in model.config.cms_adapter["levels"]] == [None, 4, 2]
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    torch.testing.assert_close(reloaded(input_ids=input_ids).logits, before, rtol=1e-10, atol=1e-10)


def test_the_consolidated_level_keeps_its_tag_and_trainability():
    model = trained_levels()
    consolidate_levels(model, source=3, target=2)
    tags = parameter_levels(model)
    slow = [name for name in tags if ".cms_levels.0." in name]
    assert slow and all(tags[name].level == 2 and tags[name].period == 4 for name in slow)
    assert all(dict(model.named_parameters())[name].requires_grad for name in slow)


def test_a_consolidated_model_round_trips_through_save_pretrained(tmp_path):
    model = trained_levels()
    consolidate_levels(model, source=3, target=2)
    consolidate_levels(model, source=3, target=2)  # the width grows each time
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    input_ids = torch.arange(12).view(2, 6)
    torch.testing.assert_close(reloaded(input_ids=input_ids).logits, model(input_ids=input_ids).logits)
    assert reloaded.config.cms_adapter["levels"][1]["intermediate_size"] == 24


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [(3, 3, "distinct new CMS levels"), (3, 1, "numbered 2 to 3"), (4, 2, "numbered 2 to 3")],
)
def test_bad_levels_are_refused(source, target, message):
    with pytest.raises(ValueError, match=message):
        consolidate_levels(trained_levels(), source=source, target=target)


@pytest.mark.parametrize("init", ["copy", "units"])
def test_mixed_levels_and_plain_models_are_refused(init):
    mixed = retrofit(tiny_family_model("llama"), CMSConfig(levels=LEVELS, init=init))
    with pytest.raises(ValueError, match=f"init='zero' or 'lowrank' \\(this one uses init='{init}'"):
        consolidate_levels(mixed, source=3, target=2)
    with pytest.raises(ValueError, match="not retrofitted"):
        consolidate_levels(tiny_family_model("llama"), source=3, target=2)
