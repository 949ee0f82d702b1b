"""The transformers model contract, in the spirit of transformers' ModelTesterMixin, on tiny HOPE models.

Argument names, clear input errors, output shapes and tuples, dtype round trips, embedding resizing, torch.compile,
device_map loading and activation checkpointing through `Trainer`.
"""

import math

import pytest
import torch
from transformers import Trainer, TrainingArguments

import hf_hope

from ..helpers import RepeatedBatch, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, HIDDEN = 97, 32


def prompt(batch: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length))


@pytest.mark.parametrize("base", [False, True], ids=["causal_lm", "base_model"])
def test_past_key_values_is_the_deprecated_name_of_cache(base):
    model = tiny_model()
    module = model.model if base else model
    first, second = prompt(), prompt(length=5)

    def continued(**cache_argument) -> torch.Tensor:
        output = module(second, **cache_argument)
        return output.last_hidden_state if base else output.logits

    expected = continued(cache=module(first, use_cache=True).cache)
    with pytest.warns(FutureWarning, match="`past_key_values` is deprecated .* Use `cache` instead"):
        renamed = continued(past_key_values=module(first, use_cache=True).cache)
    assert torch.equal(renamed, expected)
    assert not torch.allclose(continued(), expected)  # the cache matters: ignoring it would be caught


def cache_for_batch_of_two(model: hf_hope.HopeForCausalLM) -> hf_hope.HopeCache:
    return model(prompt(batch=2), use_cache=True).cache


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (lambda _: {"input_ids": prompt(batch=0)}, r"input is empty .*\(0, 7\)"),
        (
            lambda _: {"input_ids": prompt()[0]},
            r"input_ids must have shape \(batch, length\); got shape \(7,\).*unsqueeze",
        ),
        (lambda _: {"inputs_embeds": torch.randn(2, 7, HIDDEN + 1)}, "hidden_size=32.*get_input_embeddings"),
        (
            lambda model: {"input_ids": prompt(batch=1), "cache": cache_for_batch_of_two(model)},
            "HopeCache holds memories for batch size 2 .* batch size 1",
        ),
        (lambda _: {"input_ids": prompt(), "attention_mask": torch.ones(1, 7)}, "attention_mask has batch size 1 "),
        (lambda _: {"input_ids": prompt(), "attention_mask": torch.ones(3, 7)}, "attention_mask has batch size 3 "),
    ],
    ids=["empty_batch", "1d_input_ids", "embeds_width", "cache_batch", "mask_batch_1", "mask_batch_3"],
)
def test_input_errors_say_what_is_wrong_and_how_to_fix_it(inputs, message):
    model = tiny_model(dtype=torch.float32)
    with pytest.raises(ValueError, match=message):
        model(**inputs(model))


def test_hidden_states_are_the_embeddings_each_block_and_the_normed_output():
    model = tiny_model()
    input_ids = prompt()
    blocks = []
    hooks = [layer.register_forward_hook(lambda _, __, out: blocks.append(out)) for layer in model.model.layers]
    output = model.model(input_ids, output_hidden_states=True)
    for hook in hooks:
        hook.remove()
    hidden = output.hidden_states
    assert len(hidden) == model.config.num_hidden_layers + 1
    assert all(state.shape == (2, 7, HIDDEN) for state in hidden)
    assert torch.equal(hidden[0], model.model.embed_tokens(input_ids))
    for index in range(1, model.config.num_hidden_layers):
        assert torch.equal(hidden[index], blocks[index - 1])
    assert torch.equal(hidden[-1], output.last_hidden_state)
    assert torch.equal(output.last_hidden_state, model.model.norm(blocks[-1]))
    assert len(model(input_ids, output_hidden_states=True).hidden_states) == model.config.num_hidden_layers + 1


def test_return_dict_false_gives_the_fields_that_are_set_in_order():
    model = tiny_model()
    input_ids = prompt()
    output = model(input_ids, labels=input_ids, output_hidden_states=True)
    loss, logits, cache, hidden = model(input_ids, labels=input_ids, output_hidden_states=True, return_dict=False)
    assert torch.equal(loss, output.loss) and torch.equal(logits, output.logits)
    assert isinstance(cache, hf_hope.HopeCache) and len(hidden) == len(output.hidden_states)
    logits, cache = model(input_ids, return_dict=False)
    assert logits.shape == (2, 7, VOCAB)
    (last,) = model.model(input_ids, use_cache=False, return_dict=False)
    assert torch.equal(last, output.hidden_states[-1])
    model.config.return_dict = False
    assert isinstance(model(input_ids), tuple)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_save_load_round_trip_in_every_dtype(tmp_path, dtype):
    model = tiny_model(dtype=dtype)
    model.save_pretrained(tmp_path)
    input_ids = prompt()
    with torch.no_grad():
        expected = model(input_ids).logits
        for load_argument in ({"dtype": dtype}, {"dtype": "auto"}, {"torch_dtype": dtype}):
            loaded = hf_hope.HopeForCausalLM.from_pretrained(tmp_path, **load_argument)
            assert loaded.dtype == dtype, load_argument
            assert torch.equal(loaded(input_ids).logits, expected), load_argument
        upcast = hf_hope.HopeForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert upcast.dtype == torch.float32
    assert all(torch.equal(upcast.state_dict()[name], value.float()) for name, value in model.state_dict().items())


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("new_size", [120, 50])
def test_resize_token_embeddings(tied, new_size):
    model = tiny_model(tie_word_embeddings=tied)
    old_embeddings = model.get_input_embeddings().weight.clone()
    old_head = model.get_output_embeddings().weight.clone()
    model.resize_token_embeddings(new_size, mean_resizing=False)
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert model.config.vocab_size == new_size
    assert embeddings.weight.shape == head.weight.shape == (new_size, HIDDEN)
    assert (head.weight is embeddings.weight) == tied
    kept = min(new_size, VOCAB)
    assert torch.equal(embeddings.weight[:kept], old_embeddings[:kept])
    assert torch.equal(head.weight[:kept], old_head[:kept])
    assert embeddings.padding_idx == model.config.pad_token_id
    input_ids = torch.randint(3, new_size, (2, 6))
    output = model(input_ids, labels=input_ids)
    assert output.logits.shape == (2, 6, new_size) and torch.isfinite(output.loss)


def test_torch_compile_gives_the_eager_logits():
    model = tiny_model()
    input_ids = prompt()
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(input_ids).logits, model(input_ids).logits, rtol=0, atol=0)


def test_device_map_auto_loads_and_runs_on_cpu(tmp_path):
    model = tiny_model(dtype=torch.float32)
    model.save_pretrained(tmp_path)
    loaded = hf_hope.HopeForCausalLM.from_pretrained(tmp_path, device_map="auto")
    assert {parameter.device.type for parameter in loaded.parameters()} == {"cpu"}
    input_ids = prompt()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids).logits, model(input_ids).logits)
        assert loaded.generate(input_ids, max_new_tokens=2, do_sample=False).shape == (2, 9)


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
def test_gradient_checkpointing_through_trainer(tmp_path):
    model = tiny_model(dtype=torch.float32).train()
    arguments = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        logging_steps=1,
        gradient_checkpointing=True,  # the name most training scripts still use
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=RepeatedBatch(prompt(batch=2, length=12), 2))
    trainer.train()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)


@pytest.mark.parametrize("checkpoint_kwargs", [None, {"use_reentrant": True}], ids=["default", "reentrant"])
def test_gradient_checkpointing_gives_the_same_float64_gradients(checkpoint_kwargs):
    model = tiny_model().train()
    input_ids = prompt(length=10)

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(input_ids, labels=input_ids).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpoint_kwargs)
    checkpointed = gradients()
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-12, atol=1e-14, msg=name)
