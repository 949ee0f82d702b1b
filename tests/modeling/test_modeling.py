"""HopeForCausalLM: Auto classes, loss, generation with the cache (docs/design.md, invariant 3), checkpoints, dtypes."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import hf_hope

from ..helpers import tiny_config, tiny_model


def test_auto_classes_build_hope_models():
    config = AutoConfig.for_model("hope", vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_heads=4)
    assert isinstance(AutoModelForCausalLM.from_config(config), hf_hope.HopeForCausalLM)
    assert isinstance(AutoModel.from_config(config), hf_hope.HopeModel)


def test_loss_matches_transformers_loss_and_forwards_num_items_in_batch():
    model = tiny_model()
    input_ids = torch.randint(3, 97, (2, 9))
    labels = input_ids.clone()
    labels[0, :3] = -100
    output = model(input_ids, labels=labels)
    shifted = labels[:, 1:].reshape(-1)
    logits = output.logits[:, :-1].reshape(-1, 97)
    expected = torch.nn.functional.cross_entropy(logits.float(), shifted, ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)
    summed = model(input_ids, labels=labels, num_items_in_batch=torch.tensor(1)).loss
    torch.testing.assert_close(summed, expected * (shifted != -100).sum())


def test_hidden_states_and_tuple_outputs():
    model = tiny_model()
    input_ids = torch.randint(3, 97, (1, 5))
    output = model(input_ids, output_hidden_states=True)
    assert len(output.hidden_states) == model.config.num_hidden_layers + 1
    as_tuple = model(input_ids, return_dict=False)
    torch.testing.assert_close(as_tuple[0], output.logits)


def test_continuing_from_the_returned_cache_equals_recomputing():
    model = tiny_model()
    input_ids = torch.randint(3, 97, (2, 15))
    whole = model(input_ids).logits
    first = model(input_ids[:, :6], use_cache=True)
    second = model(input_ids[:, 6:], cache=first.cache, use_cache=True)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], dim=1), whole, rtol=1e-10, atol=1e-10)
    assert second.cache.get_seq_length() == 15


def test_cache_size_does_not_grow_with_length():
    model = tiny_model()
    short = model(torch.randint(3, 97, (1, 5)), use_cache=True).cache
    long = model(torch.randint(3, 97, (1, 300)), use_cache=True).cache
    assert isinstance(long, hf_hope.HopeCache)
    assert short.num_bytes() == long.num_bytes() > 0


def test_greedy_generation_with_cache_equals_without():
    model = tiny_model()
    prompt = torch.randint(3, 97, (2, 7))
    cached = model.generate(prompt, max_new_tokens=12, do_sample=False)
    uncached = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_left_padded_batch_generation_with_cache_equals_without_and_matches_unpadded():
    model = tiny_model(chunk_size=2)
    prompt = torch.randint(3, 97, (2, 8))
    prompt[1, :4] = 0
    mask = (prompt != 0).long()
    cached = model.generate(prompt, attention_mask=mask, max_new_tokens=10, do_sample=False)
    uncached = model.generate(prompt, attention_mask=mask, max_new_tokens=10, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    alone = model.generate(prompt[1:, 4:], max_new_tokens=10, do_sample=False)
    assert torch.equal(cached[1, 4:], alone[0])


def test_beam_search_and_sampling_with_cache():
    model = tiny_model()
    prompt = torch.randint(3, 97, (2, 6))
    beams = model.generate(prompt, max_new_tokens=6, num_beams=3, do_sample=False)
    beams_uncached = model.generate(prompt, max_new_tokens=6, num_beams=3, do_sample=False, use_cache=False)
    assert torch.equal(beams, beams_uncached)
    torch.manual_seed(1)
    sampled = model.generate(prompt, max_new_tokens=6, do_sample=True, top_k=5, num_return_sequences=2)
    torch.manual_seed(1)
    sampled_uncached = model.generate(
        prompt, max_new_tokens=6, do_sample=True, top_k=5, num_return_sequences=2, use_cache=False
    )
    assert sampled.shape == (4, 12)
    assert torch.equal(sampled, sampled_uncached)


def test_wrong_cache_type_and_mask_shape_are_refused():
    from transformers import DynamicCache

    model = tiny_model()
    input_ids = torch.randint(3, 97, (1, 4))
    with pytest.raises(TypeError, match="HopeCache"):
        model(input_ids, cache=DynamicCache())
    with pytest.raises(ValueError, match="2D attention_mask"):
        model(input_ids, attention_mask=torch.ones(1, 1, 4, 4))


def test_activation_checkpointing_gives_the_same_gradients():
    model = tiny_model().train()
    input_ids = torch.randint(3, 97, (2, 10))

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(input_ids, labels=input_ids).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_frozen_cms_level_and_level_tags():
    model = hf_hope.HopeForCausalLM(
        tiny_config(cms_levels=[{"intermediate_size": 8, "period": None}, {"intermediate_size": 8, "period": 3}])
    )
    tags = hf_hope.parameter_levels(model)
    frozen = "model.layers.0.cms.levels.0.mlp.up_proj.weight"
    slow = "model.layers.1.cms.levels.1.mlp.down_proj.weight"
    assert tags[frozen] == hf_hope.LevelTag(level=1, period=None, lr_scale=1.0)
    assert tags[slow] == hf_hope.LevelTag(level=2, period=3, lr_scale=1.0)
    assert tags["model.layers.0.mixer.q_proj.weight"] == hf_hope.LevelTag(level=0, period=1, lr_scale=1.0)
    assert not dict(model.named_parameters())[frozen].requires_grad


def test_independent_cms_variant_is_a_weighted_sum():
    model = tiny_model(cms_variant="independent")
    cms = model.model.layers[0].cms
    torch.testing.assert_close(cms.level_weights, torch.full((2,), 0.5, dtype=torch.float64))
    hidden = torch.randn(1, 3, 32, dtype=torch.float64)
    expected = hidden + 0.5 * cms.levels[0](hidden) + 0.5 * cms.levels[1](hidden)
    torch.testing.assert_close(cms(hidden), expected)


def test_bfloat16_forward_and_generation():
    model = tiny_model(dtype=torch.bfloat16)
    prompt = torch.randint(3, 97, (1, 5))
    logits = model(prompt).logits
    assert logits.dtype == torch.bfloat16
    reference = model.float()(prompt).logits
    torch.testing.assert_close(logits.float(), reference, rtol=0.05, atol=0.05)
    model.to(torch.bfloat16)
    assert model.generate(prompt, max_new_tokens=3, do_sample=False).shape == (1, 8)


def test_tied_word_embeddings_share_one_matrix(tmp_path):
    model = hf_hope.HopeForCausalLM(tiny_config(tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight)
