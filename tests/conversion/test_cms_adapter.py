"""The CMS adapter: function preservation, folding, tags, gradients, save/load and refusals, for every family."""

import copy
import pickle

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

import hf_hope
from hf_hope.conversion import CMS_CONFIG_NAME, CMS_WEIGHTS_NAME, RetrofittedFFN, cms_adapter_state_dict

from ..helpers import tiny_family_config, tiny_family_model, tiny_model

FAMILIES = hf_hope.SUPPORTED_MODEL_TYPES
INITS = ["zero", "copy", "lowrank", "units"]
INPUT_IDS = torch.tensor([[5, 17, 3, 99, 42, 7, 64, 2, 11], [1, 2, 3, 4, 5, 6, 7, 8, 9]])


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT_IDS).logits


def perturb_trainable(model: torch.nn.Module, scale: float = 0.05, only: str = "") -> None:
    """Move every trainable parameter (whose name contains `only`), as training would."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and only in name:
                parameter.add_(scale * torch.randn_like(parameter))


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("model_type", FAMILIES)
def test_retrofit_preserves_logits(model_type, init):
    model = tiny_family_model(model_type)
    reference = logits(model)
    hf_hope.retrofit(model, hf_hope.CMSConfig(init=init))
    assert type(model).__name__ == "CMS" + type(tiny_family_model(model_type)).__name__
    assert (logits(model) - reference).abs().max() <= 1e-5
    if init in ("lowrank", "units"):  # the changes are exactly zero at init
        assert torch.equal(logits(model), reference)


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("model_type", FAMILIES)
def test_unretrofit_folds_trained_levels_exactly(model_type, init):
    model = hf_hope.retrofit(tiny_family_model(model_type), hf_hope.CMSConfig(init=init))
    perturb_trainable(model)
    trained = logits(model)
    hf_hope.unretrofit(model)
    plain_class = type(tiny_family_model(model_type))
    assert type(model) is plain_class
    assert not any(isinstance(module, RetrofittedFFN) for module in model.modules())
    assert not hasattr(model.config, "cms_adapter") and model.config.model_type == model_type
    assert (logits(model) - trained).abs().max() <= 1e-5
    width_field = "n_inner" if model_type == "gpt2" else "intermediate_size"
    assert (
        getattr(model.config, width_field)
        == {"zero": 64 + 2 * 128, "copy": 3 * 64, "lowrank": 64, "units": 64 + 2 * 5}[init]
    )


@pytest.mark.parametrize("model_type", FAMILIES)
def test_lowrank_levels_fold_into_the_projections_exactly_in_float64(model_type):
    model = hf_hope.retrofit(tiny_family_model(model_type).double(), hf_hope.CMSConfig(init="lowrank", rank=3))
    perturb_trainable(model)
    trained = logits(model)
    hf_hope.unretrofit(model)
    assert type(model) is type(tiny_family_model(model_type))
    torch.testing.assert_close(logits(model), trained, rtol=1e-12, atol=1e-12)


def test_lowrank_levels_are_rank_r_changes_of_every_projection_and_cost_what_they_say():
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(init="lowrank", rank=4))
    level = model.model.layers[0].mlp.cms_levels[0].mlp
    assert set(level.deltas) == {"gate_proj", "up_proj", "down_proj"}
    assert level.deltas["gate_proj"].in_factor.weight.shape == (4, 32)
    assert level.deltas["down_proj"].out_factor.weight.shape == (32, 4)
    assert level.is_silent() and not level.deltas["gate_proj"].in_factor.weight.eq(0).all()
    added = sum(parameter.numel() for name, parameter in model.named_parameters() if ".cms_levels." in name)
    assert added == 2 * 2 * 3 * 4 * (32 + 64)  # layers x levels x projections x rank x (in + out)
    gpt2 = hf_hope.retrofit(tiny_family_model("gpt2"), hf_hope.CMSConfig(init="lowrank", rank=2))
    assert set(gpt2.transformer.h[0].mlp.cms_levels[1].mlp.deltas) == {"c_fc", "c_proj"}
    assert not gpt2.transformer.h[0].mlp.c_fc._forward_hooks  # the hooks live for one forward only


@pytest.mark.parametrize("model_type", FAMILIES)
def test_unit_levels_fold_into_a_wider_ffn_exactly_in_float64(model_type):
    levels = [{"period": 100}, {"period": 4, "units": 7}, {"period": 1}]  # the pretrained FFN trains too
    config = hf_hope.CMSConfig(init="units", units=0.2, levels=levels)
    model = hf_hope.retrofit(tiny_family_model(model_type).double(), config)
    perturb_trainable(model)
    trained = logits(model)
    hf_hope.unretrofit(model)
    assert type(model) is type(tiny_family_model(model_type))
    assert getattr(model.config, "n_inner" if model_type == "gpt2" else "intermediate_size") == 64 + 7 + 13
    torch.testing.assert_close(logits(model), trained, rtol=1e-12, atol=1e-12)


def test_unit_levels_copy_the_highest_scoring_units_and_cost_what_they_say():
    model = tiny_family_model("llama")
    pretrained = copy.deepcopy(model.model.layers[1].mlp)
    hf_hope.retrofit(model, hf_hope.CMSConfig(init="units", units=8))
    level = model.model.layers[1].mlp.cms_levels[0].mlp
    scores = pretrained.down_proj.weight.norm(dim=0) * pretrained.gate_proj.weight.norm(dim=1)
    scores = scores * pretrained.up_proj.weight.norm(dim=1)
    assert level.units.tolist() == sorted(scores.topk(8).indices.tolist())
    assert torch.equal(level.ffn.gate_proj.weight, pretrained.gate_proj.weight[level.units])
    assert torch.equal(level.ffn.down_proj.weight, pretrained.down_proj.weight[:, level.units])
    added = sum(parameter.numel() for name, parameter in model.named_parameters() if ".cms_levels." in name)
    assert added == 2 * 2 * 3 * 32 * 8  # layers x levels x projections x hidden x units
    assert torch.allclose(model.model.layers[1].mlp.cms_mixing.weights(), torch.full((3,), 1 / 3))
    gpt2 = hf_hope.retrofit(tiny_family_model("gpt2"), hf_hope.CMSConfig(init="units", units=4))
    copied = gpt2.transformer.h[0].mlp.cms_levels[1].mlp.ffn
    assert copied.c_fc.weight.shape == (32, 4) and not copied.c_proj.bias.any()  # the bias stays the FFN's own


def test_unit_choice_is_saved_with_the_adapter(tmp_path):
    """A saved adapter keeps the units its levels copy, even where the base would now score others higher."""
    model = hf_hope.retrofit(tiny_family_model("qwen2"), hf_hope.CMSConfig(init="units", units=6))
    chosen = model.model.layers[0].mlp.cms_levels[1].mlp.units
    chosen.copy_(torch.arange(6) * 10)  # not the highest-scoring ones
    perturb_trainable(model)
    hf_hope.save_cms_adapter(model, tmp_path)
    restored = hf_hope.load_cms_adapter(tiny_family_model("qwen2"), tmp_path)
    assert restored.model.layers[0].mlp.cms_levels[1].mlp.units.tolist() == [0, 10, 20, 30, 40, 50]
    assert torch.equal(logits(restored), logits(model))


def test_more_units_than_the_ffn_has_is_refused():
    with pytest.raises(ValueError, match=r"units=65 is more than the FFN's 64 hidden units.*units=0.08"):
        hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(init="units", units=65))


def test_unretrofit_of_untrained_zero_levels_gives_back_the_original():
    model = tiny_family_model("llama")
    original = copy.deepcopy(model)
    hf_hope.retrofit(model, hf_hope.CMSConfig(init="zero"))
    hf_hope.unretrofit(model)
    assert model.config.intermediate_size == 64
    assert model.state_dict().keys() == original.state_dict().keys()
    assert torch.equal(logits(model), logits(original))
    assert all(parameter.requires_grad for parameter in model.parameters())


def test_unretrofit_refuses_unequal_widths_and_changes_nothing():
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(layers=[1]))
    perturb_trainable(model)
    before = logits(model)
    with pytest.raises(ValueError, match=r"folded FFN widths would differ.*\[64, 74\].*merge=False"):
        hf_hope.unretrofit(model)
    assert type(model).__name__ == "CMSLlamaForCausalLM"
    assert torch.equal(logits(model), before)
    hf_hope.unretrofit(model, merge=False)
    assert type(model) is LlamaForCausalLM


def test_level_tags_and_freezing():
    config = hf_hope.CMSConfig(
        init="zero", levels=[{"period": None}, {"period": 16, "lr_scale": 0.5}, {"period": 1, "intermediate_size": 8}]
    )
    model = hf_hope.retrofit(tiny_family_model("llama"), config)
    tags = hf_hope.parameter_levels(model)
    assert tags["model.layers.0.mlp.gate_proj.weight"] == hf_hope.LevelTag(1, None, 1.0)
    assert tags["model.layers.1.mlp.cms_levels.0.mlp.down_proj.weight"] == hf_hope.LevelTag(2, 16, 0.5)
    assert tags["model.layers.1.mlp.cms_levels.1.mlp.up_proj.weight"] == hf_hope.LevelTag(3, 1, 1.0)
    assert tags["model.layers.0.self_attn.q_proj.weight"] == hf_hope.LevelTag(0, 1, 1.0)
    assert model.model.layers[0].mlp.cms_levels[1].mlp.up_proj.weight.shape == (8, 32)
    copied = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(init="copy"))
    assert hf_hope.parameter_levels(copied)["model.layers.0.mlp.cms_mixing.logits"] == hf_hope.LevelTag(0, 1, 1.0)
    assert torch.allclose(copied.model.layers[0].mlp.cms_mixing.weights(), torch.full((3,), 1 / 3))


@pytest.mark.parametrize("init", INITS)
def test_gradients_reach_only_trainable_levels(init):
    levels = [{"period": None}, {"period": 4}, {"period": None}]
    model = hf_hope.retrofit(tiny_family_model("qwen2"), hf_hope.CMSConfig(init=init, levels=levels)).train()
    model(input_ids=INPUT_IDS, labels=INPUT_IDS).loss.backward()
    for name, parameter in model.named_parameters():
        # the base is frozen by default: only the trainable new levels and the mixing weights get gradients
        frozen = (".cms_levels." not in name and ".cms_mixing." not in name) or ".cms_levels.1." in name
        assert parameter.requires_grad is not frozen, name
        assert (parameter.grad is None) is frozen, name
    # with zero init the new level's output projection is zero, so only it gets a gradient on the first step
    new_level = model.model.layers[0].mlp.cms_levels[0].mlp
    if init == "lowrank":  # likewise B (zero) gets a gradient, A none until B has moved
        assert new_level.deltas["up_proj"].out_factor.weight.grad.abs().sum() > 0
        assert not new_level.deltas["up_proj"].in_factor.weight.grad.any()
    else:
        ffn = new_level.ffn if init == "units" else new_level
        assert ffn.down_proj.weight.grad.abs().sum() > 0


def test_layer_selection_by_list_and_pattern():
    by_list = hf_hope.retrofit(tiny_family_model("mistral"), hf_hope.CMSConfig(layers=[1]))
    by_pattern = hf_hope.retrofit(tiny_family_model("mistral"), hf_hope.CMSConfig(layers=r".*layers\.1"))
    for model in (by_list, by_pattern):
        assert not isinstance(model.model.layers[0].mlp, RetrofittedFFN)
        assert isinstance(model.model.layers[1].mlp, RetrofittedFFN)
        assert model.config.cms_adapter["layers"] == [1]
    with pytest.raises(ValueError, match="matches no decoder layer"):
        hf_hope.retrofit(tiny_family_model("mistral"), hf_hope.CMSConfig(layers="decoder.7"))
    with pytest.raises(ValueError, match=r"\[5\] are out of range; the model has 2 layers"):
        hf_hope.retrofit(tiny_family_model("mistral"), hf_hope.CMSConfig(layers=[0, 5]))


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("model_type", ["llama", "phi3", "gpt2", "gemma3_text"])
def test_save_pretrained_round_trip_through_auto_class(tmp_path, model_type, init):
    model = hf_hope.retrofit(tiny_family_model(model_type), hf_hope.CMSConfig(init=init))
    perturb_trainable(model)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    assert loaded.config.cms_adapter == model.config.cms_adapter
    assert torch.equal(logits(loaded), logits(model))
    assert hf_hope.parameter_levels(loaded) == hf_hope.parameter_levels(model)


def test_a_retrofitted_checkpoint_still_loads_as_the_plain_family(tmp_path):
    """The pretrained FFN keeps its parameter names, so the plain class loads the base weights."""
    original = tiny_family_model("llama")
    hf_hope.retrofit(copy.deepcopy(original), hf_hope.CMSConfig()).save_pretrained(tmp_path)
    plain = LlamaForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(logits(plain), logits(original))


def test_retrofit_leaves_other_models_sharing_the_config_alone():
    first = tiny_family_model("llama")
    second = LlamaForCausalLM(first.config).eval()
    hf_hope.retrofit(first)
    assert type(second.config).__name__ == "LlamaConfig" and not hasattr(second.config, "cms_adapter")
    shared = [
        module for name, module in first.named_modules() if hasattr(module, "config") and "cms_levels" not in name
    ]
    assert all(module.config is first.config for module in shared)


def test_retrofitted_model_pickles():
    model = hf_hope.retrofit(tiny_family_model("gemma"), hf_hope.CMSConfig(init="copy"))
    perturb_trainable(model)
    restored = pickle.loads(pickle.dumps(model))
    assert torch.equal(logits(restored), logits(model))


@pytest.mark.parametrize("slowest_period", [None, 100])
@pytest.mark.parametrize("init", INITS)
def test_adapter_save_load_round_trip(tmp_path, init, slowest_period):
    config = hf_hope.CMSConfig(init=init, levels=[{"period": slowest_period}, {"period": 8}], layers=[0])
    model = hf_hope.retrofit(tiny_family_model("qwen3"), config)
    perturb_trainable(model, only="layers.0.mlp.")  # only the adapter moves; the rest stays the base model
    hf_hope.save_cms_adapter(model, tmp_path)
    assert {path.name for path in tmp_path.iterdir()} == {CMS_CONFIG_NAME, CMS_WEIGHTS_NAME}
    saved_names = cms_adapter_state_dict(model).keys()
    assert all(name.startswith("layers.0.") for name in saved_names)
    assert any(".cms_levels." not in name and ".cms_mixing." not in name for name in saved_names) == (
        slowest_period is not None
    )
    restored = hf_hope.load_cms_adapter(tiny_family_model("qwen3"), tmp_path)
    assert type(restored).__name__ == "CMSQwen3ForCausalLM"
    assert restored.config.cms_adapter == model.config.cms_adapter
    assert torch.equal(logits(restored), logits(model))


def test_adapter_refuses_another_base_and_leaves_it_unchanged(tmp_path):
    hf_hope.save_cms_adapter(hf_hope.retrofit(tiny_family_model("llama")), tmp_path)
    other_type = tiny_family_model("mistral")
    with pytest.raises(ValueError, match=r"made for another base model.*'model_type': 'llama'.*'mistral'"):
        hf_hope.load_cms_adapter(other_type, tmp_path)
    deeper = LlamaForCausalLM(tiny_family_config("llama", num_hidden_layers=3))
    with pytest.raises(ValueError, match=r"'num_layers': 2.*'num_layers': 3"):
        hf_hope.load_cms_adapter(deeper, tmp_path)
    assert type(deeper) is LlamaForCausalLM and not hasattr(deeper.config, "cms_adapter")
    assert not any(isinstance(module, RetrofittedFFN) for module in deeper.modules())


def test_adapter_with_tensors_that_do_not_fit_is_refused_and_undone(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    hf_hope.save_cms_adapter(hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(init="zero")), tmp_path)
    tensors = load_file(tmp_path / CMS_WEIGHTS_NAME)
    with safe_open(tmp_path / CMS_WEIGHTS_NAME, framework="pt") as file:
        metadata = file.metadata()  # keeps the pair token, so only the shape is wrong
    name = "layers.1.cms_levels.0.mlp.up_proj.weight"
    tensors[name] = torch.zeros(7, 32)
    save_file(tensors, tmp_path / CMS_WEIGHTS_NAME, metadata=metadata)
    base = tiny_family_model("llama")
    reference = logits(base)
    with pytest.raises(ValueError, match=rf"{name} has shape \(7, 32\), this model needs \(128, 32\)"):
        hf_hope.load_cms_adapter(base, tmp_path)
    assert type(base) is LlamaForCausalLM and torch.equal(logits(base), reference)
    with pytest.raises(FileNotFoundError, match="holds no CMS adapter"):
        hf_hope.load_cms_adapter(base, tmp_path / "missing")


def test_unsupported_models_and_ffns_are_named():
    with pytest.raises(ValueError, match=r"does not support model type 'hope'.*gemma, gemma2.*qwen3"):
        hf_hope.retrofit(tiny_model())
    model = tiny_family_model("llama")
    model.model.layers[1].mlp = torch.nn.Sequential(torch.nn.Linear(32, 32))
    with pytest.raises(ValueError, match=r"does not recognise the FFN of 'model.layers.1'.*LlamaMLP.*Sequential"):
        hf_hope.retrofit(model)
    retrofitted = hf_hope.retrofit(tiny_family_model("llama"))
    with pytest.raises(ValueError, match="already retrofitted"):
        hf_hope.retrofit(retrofitted)
    with pytest.raises(ValueError, match="not retrofitted"):
        hf_hope.unretrofit(tiny_family_model("llama"))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"init": "random"}, r"init='random' is unknown"),
        ({"levels": [{"period": None}]}, "at least two level dicts"),
        ({"levels": [{"period": None}, {"period": 0}]}, r"levels\[1\]\.period=0 is invalid"),
        ({"levels": [{"period": None}, {"period": 2.5}]}, r"levels\[1\]\.period=2.5 is invalid"),
        ({"levels": [{"period": None}, {"speed": 2}]}, r"levels\[1\] has unknown keys \['speed'\]"),
        ({"levels": [{"period": None}, {"period": 1, "lr_scale": 0}]}, r"levels\[1\]\.lr_scale=0 is invalid"),
        ({"levels": [{"intermediate_size": 8}, {"period": 1}]}, "level 1 is the pretrained FFN"),
        ({"init": "copy", "levels": [{}, {"intermediate_size": 8}]}, "sizes the new levels of init='zero' only"),
        ({"levels": [{}, {"rank": 8}]}, r"levels\[1\]\.rank is not allowed: it sizes the new levels of init='lowrank'"),
        ({"init": "lowrank", "levels": [{"rank": 2}, {}]}, "rank is not allowed: level 1 is the pretrained FFN"),
        ({"init": "lowrank", "levels": [{}, {"rank": 0}]}, r"levels\[1\]\.rank=0 is invalid"),
        ({"init": "units", "levels": [{}, {"units": 1.5}]}, r"levels\[1\]\.units=1.5 is invalid: give a count"),
        (
            {"init": "zero", "levels": [{}, {"units": 4}]},
            r"levels\[1\]\.units is not allowed: it sizes the new levels of init='units'",
        ),
        ({"units": 0.0}, r"units=0.0 is invalid"),
        ({"units": False}, r"units=False is invalid"),
        ({"intermediate_size": 0}, "intermediate_size=0 is invalid"),
        ({"rank": True}, "rank=True is invalid"),
        ({"layers": [0, -1]}, r"layers=\[0, -1\] is invalid"),
        ({"layers": []}, r"layers=\[\] selects no layer.*layers=None for all layers"),
        ({"layers": 3}, r"layers=3 is invalid: give a list of layer indices \(e.g. layers=\[3\]\)"),
        ({"layers": {"all": True}}, r"layers=\{'all': True\} is invalid: give a list of layer indices"),
        ({"layers": "(unclosed"}, "not a valid regular expression"),
    ],
)
def test_bad_cms_config_values_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        hf_hope.CMSConfig(**values)


@pytest.mark.slow
@pytest.mark.parametrize("init", INITS)
def test_smollm2_retrofit_keeps_logits_and_generation_and_trains(smollm2_dir, init):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    original = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    text = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    batch = tokenizer(text, return_tensors="pt")
    model = hf_hope.retrofit(copy.deepcopy(original), hf_hope.CMSConfig(init=init))
    with torch.no_grad():
        assert (model(**batch).logits - original(**batch).logits).abs().max() <= 1e-5
    prompt = tokenizer("The three primary colours are", return_tensors="pt")
    greedy = {"max_new_tokens": 16, "do_sample": False}
    assert torch.equal(model.generate(**prompt, **greedy), original.generate(**prompt, **greedy))

    model.train()
    frozen_before = model.model.layers[3].mlp.gate_proj.weight.clone()
    fast = model.model.layers[3].mlp.cms_levels[-1].mlp
    fast_level = {
        "lowrank": lambda: fast.deltas["down_proj"].out_factor.weight,
        "units": lambda: fast.ffn.down_proj.weight,
    }.get(init, lambda: fast.down_proj.weight)()
    fast_before = fast_level.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for _ in range(3):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert torch.equal(model.model.layers[3].mlp.gate_proj.weight, frozen_before)
    assert not torch.equal(fast_level, fast_before)
