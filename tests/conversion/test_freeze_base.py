"""Adapter-style training: `retrofit` freezes the base (PEFT's own parameters excepted), and the parameter report."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

import hf_hope
from hf_hope.conversion import ParameterCount

from ..helpers import tiny_family_model, tiny_model

LEVELS = [{"period": None}, {"period": 4}, {"period": 1}]


def in_adapter(name: str) -> bool:
    """A parameter of the CMS adapter: a new level's, or the mixing weights (unit copies and copy init)."""
    return ".cms_levels." in name or ".cms_mixing." in name


def trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_retrofit_freezes_everything_outside_the_adapter_by_default(model_type):
    model = hf_hope.retrofit(tiny_family_model(model_type), hf_hope.CMSConfig(levels=LEVELS))
    trainable = trainable_names(model)
    assert trainable and all(in_adapter(name) for name in trainable)
    assert trainable == {name for name, _ in model.named_parameters() if in_adapter(name)}


def test_copy_init_trains_its_mixing_weights_and_levels_keep_their_own_rule():
    levels = [{"period": 16}, {"period": None}, {"period": 1}]
    model = hf_hope.retrofit(tiny_family_model("qwen2"), hf_hope.CMSConfig(init="copy", levels=levels))
    for name in trainable_names(model):
        assert ".mlp." in name and ".cms_levels.0." not in name, name  # level 2 (cms_levels.0) is frozen
    assert "model.layers.0.mlp.cms_mixing.logits" in trainable_names(model)
    assert "model.layers.0.mlp.gate_proj.weight" in trainable_names(model)  # the pretrained FFN has period 16
    assert "model.layers.0.self_attn.q_proj.weight" not in trainable_names(model)


def test_freeze_base_false_leaves_the_base_as_it_was():
    model = tiny_family_model("llama")
    model.model.layers[0].self_attn.k_proj.requires_grad_(False)
    hf_hope.retrofit(model, hf_hope.CMSConfig(levels=LEVELS), freeze_base=False)
    trainable = trainable_names(model)
    assert "model.embed_tokens.weight" in trainable and "model.layers.1.self_attn.k_proj.weight" in trainable
    assert "model.layers.0.self_attn.k_proj.weight" not in trainable
    assert "model.layers.0.mlp.up_proj.weight" not in trainable  # level 1 is frozen


def test_unselected_layers_are_frozen_and_unretrofit_unfreezes_what_retrofit_froze():
    model = tiny_family_model("mistral")
    model.lm_head.requires_grad_(False)  # frozen before retrofit: stays frozen after unretrofit
    hf_hope.retrofit(model, hf_hope.CMSConfig(levels=LEVELS, layers=[1]))
    assert all(name.startswith("model.layers.1.mlp.cms_") for name in trainable_names(model))
    hf_hope.unretrofit(model, merge=False)
    assert trainable_names(model) == {name for name, _ in model.named_parameters()} - {"lm_head.weight"}


def test_lora_and_modules_to_save_stay_trainable_after_retrofit():
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"], lora_dropout=0.0)
    model = get_peft_model(tiny_family_model("llama"), lora)
    peft_trainable = trainable_names(model)
    assert any("lora_A" in name for name in peft_trainable) and any(
        "modules_to_save" in name for name in peft_trainable
    )
    hf_hope.retrofit(model, hf_hope.CMSConfig(levels=LEVELS))
    trainable = trainable_names(model)
    assert trainable - peft_trainable and all(in_adapter(name) for name in trainable - peft_trainable)
    assert peft_trainable <= trainable


def test_count_parameters_matches_peft_and_breaks_down_by_level():
    model = get_peft_model(tiny_family_model("llama"), LoraConfig(r=4, target_modules=["q_proj"]))
    hf_hope.retrofit(model, hf_hope.CMSConfig(init="zero", levels=LEVELS, intermediate_size=8))
    report = hf_hope.count_parameters(model)
    assert (report.trainable, report.total) == model.get_nb_trainable_parameters()
    new_level = 3 * 32 * 8 * 2  # gate, up and down projections (hidden 32, width 8), in each of the 2 layers
    levels = {(tag.level, tag.period): count for tag, count in report.levels.items()}
    assert list(levels) == [(0, 1), (1, None), (2, 4), (3, 1)]
    assert levels[(2, 4)] == levels[(3, 1)] == ParameterCount(new_level, new_level)
    assert levels[(1, None)] == ParameterCount(0, 3 * 32 * 64 * 2)
    assert levels[(0, 1)].trainable == 2 * 2 * 4 * 32  # LoRA A and B of q_proj in each layer
    assert report.trainable == levels[(0, 1)].trainable + 2 * new_level
    lines = str(report).splitlines()
    assert lines[0] == (
        f"trainable params: {report.trainable:,d} || all params: {report.total:,d} || "
        f"trainable%: {100 * report.trainable / report.total:.4f}"
    )
    assert lines[3] == f"  level 2 (p4): trainable {new_level:,d} of {new_level:,d} (100.0000%)"


def test_print_trainable_parameters_works_on_hope(capsys):
    model = tiny_model(cms_levels=[{"intermediate_size": 48, "period": 1}, {"intermediate_size": 24, "lr_scale": 0.5}])
    model.model.embed_tokens.requires_grad_(False)
    hf_hope.print_trainable_parameters(model)
    lines = capsys.readouterr().out.splitlines()
    total = sum(parameter.numel() for parameter in model.parameters())
    trainable = total - model.model.embed_tokens.weight.numel()
    assert (
        lines[0]
        == f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
    )
    assert [line.split(":")[0] for line in lines[1:]] == [
        "  level 0 (p1)",
        "  level 1 (p1)",
        "  level 2 (p1, lr_scale 0.5)",
    ]
