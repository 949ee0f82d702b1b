"""`generate()` features on a tiny HOPE model, in the spirit of transformers' GenerationTesterMixin.

Greedy equals a manual loop, beam search, seeded sampling, scores, streamers, stopping criteria, and continuing
from a returned `HopeCache` (under its name `cache` and the deprecated `past_key_values`).
"""

from contextlib import nullcontext

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

import hf_hope

from ..helpers import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 97


@pytest.fixture(scope="module")
def model() -> hf_hope.HopeForCausalLM:
    return tiny_model()


@pytest.fixture
def prompt() -> torch.Tensor:
    return torch.randint(3, VOCAB, (2, 6))


def test_greedy_equals_a_manual_loop_without_cache(model, prompt):
    generated = model.generate(prompt, max_new_tokens=5, do_sample=False)
    sequence = prompt
    for _ in range(5):
        next_token = model(sequence, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        sequence = torch.cat([sequence, next_token], dim=1)
    assert torch.equal(generated, sequence)


def test_beam_search_returns_scored_beams(model, prompt):
    output = model.generate(
        prompt,
        max_new_tokens=4,
        num_beams=2,
        num_return_sequences=2,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert output.sequences.shape == (4, 10)
    assert output.sequences_scores.shape == (4,) and output.beam_indices.shape == (4, 4)
    assert len(output.scores) == 4 and output.scores[0].shape == (4, VOCAB)
    assert torch.equal(output.sequences[::2], model.generate(prompt, max_new_tokens=4, num_beams=2, do_sample=False))


def test_sampling_with_a_seed_is_reproducible(model, prompt):
    def sample(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return model.generate(prompt, max_new_tokens=8, do_sample=True, temperature=2.0)

    assert torch.equal(sample(3), sample(3))
    assert not torch.equal(sample(3), sample(4))


def test_scores_logits_and_cache_of_return_dict_in_generate(model, prompt):
    output = model.generate(
        prompt, max_new_tokens=4, do_sample=False, output_scores=True, output_logits=True, return_dict_in_generate=True
    )
    assert output.sequences.shape == (2, 10)
    assert len(output.scores) == len(output.logits) == 4
    assert all(step.shape == (2, VOCAB) for step in (*output.scores, *output.logits))
    assert torch.equal(torch.stack(output.scores, 1).argmax(-1), output.sequences[:, 6:])
    # The last generated token has not been fed back yet: the cache has absorbed everything before it.
    assert isinstance(output.cache, hf_hope.HopeCache) and output.cache.get_seq_length() == 9


class CollectingStreamer(BaseStreamer):
    """Records every `put` (the prompt first, then one token per step) and whether `end` was called."""

    def __init__(self) -> None:
        self.pieces: list[list[int]] = []
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        self.pieces.append(value.flatten().tolist())

    def end(self) -> None:
        self.ended = True


def test_streamer_receives_the_prompt_then_each_token(model, prompt):
    streamer = CollectingStreamer()
    generated = model.generate(prompt[:1], max_new_tokens=4, do_sample=False, streamer=streamer)
    assert streamer.ended
    assert streamer.pieces[0] == prompt[0].tolist()
    assert [token for piece in streamer.pieces[1:] for token in piece] == generated[0, 6:].tolist()


class StopAtLength(StoppingCriteria):
    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length, dtype=torch.bool)


def test_custom_stopping_criteria_stop_early(model, prompt):
    stopped = model.generate(
        prompt, max_new_tokens=10, do_sample=False, stopping_criteria=StoppingCriteriaList([StopAtLength(8)])
    )
    assert torch.equal(stopped, model.generate(prompt, max_new_tokens=2, do_sample=False))


@pytest.mark.parametrize("cache_name", ["cache", "past_key_values"])
def test_continuing_from_the_returned_cache_equals_one_long_generation(model, prompt, cache_name):
    whole = model.generate(prompt, max_new_tokens=8, do_sample=False)
    first = model.generate(prompt, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    with pytest.warns(FutureWarning) if cache_name == "past_key_values" else nullcontext():
        second = model.generate(first.sequences, max_new_tokens=4, do_sample=False, **{cache_name: first.cache})
    assert torch.equal(second, whole)


@pytest.mark.parametrize(
    "settings", [{"num_beams": 2}, {"do_sample": True, "num_return_sequences": 2}], ids=["beams", "samples"]
)
def test_continuing_from_the_returned_cache_with_more_sequences_per_prompt(model, prompt, settings):
    """The cache holds one state per prompt; beams and returned sequences each continue from their prompt's."""
    first = model.generate(prompt, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    torch.manual_seed(5)
    continued = model.generate(first.sequences, cache=first.cache, max_new_tokens=3, **settings)
    torch.manual_seed(5)
    recomputed = model.generate(first.sequences, max_new_tokens=3, **settings)
    assert torch.equal(continued, recomputed)


def test_assisted_generation_is_refused_clearly(model, prompt):
    with pytest.raises(ValueError, match="stateful"):
        model.generate(prompt, max_new_tokens=3, prompt_lookup_num_tokens=2)
