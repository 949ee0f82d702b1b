"""Scoring candidate answers: exact shared-prompt log-likelihoods, and the best-first search for the top answer."""

import random

import pytest
import torch

from hf_hope.continual import AnswerTree, ContinualSettings, answer_log_likelihoods, most_likely_answer, prepare_model
from hf_hope.continual.answer_scoring import check_prefix_free

from ..helpers import tiny_family_model, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def model_for(strategy: str) -> torch.nn.Module:
    """A tiny float64 Llama prepared for `strategy`, with non-trivial adapters so that their path counts."""
    settings = ContinualSettings(strategy=strategy, lora_rank=4, cms_periods=[2, 1], cms_width=16, use_cpu=True)
    model = prepare_model(tiny_family_model("llama"), settings).double().eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name or "cms_levels" in name:
                parameter.normal_(0, 0.05)
    return model


def naive_log_likelihood(model, prompt: list[int], answer: list[int]) -> float:
    """log p(answer | prompt) from one full forward pass of prompt + answer, without any cache."""
    sequence = torch.tensor([prompt + answer])
    log_probabilities = model(input_ids=sequence).logits[0].to(torch.float64).log_softmax(-1)
    positions = range(len(prompt) - 1, len(prompt) + len(answer) - 1)
    return sum(log_probabilities[position, token].item() for position, token in zip(positions, answer, strict=True))


def prefix_free_answers(count: int, seed: int) -> list[list[int]]:
    """`count` distinct answers of 1-5 tokens over a 6-token alphabet (so many share prefixes), ended by 127."""
    rng = random.Random(seed)
    bodies = set()
    while len(bodies) < count:
        bodies.add(tuple(rng.randrange(6) for _ in range(rng.randrange(0, 5))))
    return [[*body, 127] for body in sorted(bodies)]


@pytest.mark.parametrize("strategy", ["full", "lora", "cms"])
def test_shared_prompt_scoring_equals_one_sequence_per_answer(strategy):
    model = model_for(strategy)
    prompt = [5, 17, 99, 3, 42, 8, 64]
    answers = [[12], [12, 40], [12, 40, 7], [90, 1, 2, 3, 4, 5], [127, 0], [33, 33, 33]]
    with torch.no_grad():
        expected = torch.tensor(
            [naive_log_likelihood(model, prompt, answer) for answer in answers], dtype=torch.float64
        )
        for batch_size in (1, 4, 100):  # candidate batches of one, ragged and all at once
            scores = answer_log_likelihoods(model, prompt, answers, batch_size, "cpu")
            assert scores.dtype == torch.float64
            torch.testing.assert_close(scores, expected, rtol=0, atol=1e-10)


def test_scores_are_log_probabilities_summed_over_the_answer():
    model = tiny_family_model("llama").double()
    prompt = [1, 2, 3]
    with torch.no_grad():
        every_token = answer_log_likelihoods(model, prompt, [[token] for token in range(128)], 32, "cpu")
        assert every_token.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
        two_tokens = answer_log_likelihoods(model, prompt, [[7, token] for token in range(128)], 32, "cpu")
        assert two_tokens.exp().sum().item() == pytest.approx(every_token[7].exp().item(), abs=1e-12)


@pytest.mark.parametrize("strategy", ["full", "lora", "cms"])
@pytest.mark.parametrize("sharpness", [1.0, 30.0])  # a flat model explores much of the tree, a sharp one little
def test_the_search_finds_the_argmax_of_every_answers_score(strategy, sharpness):
    model = model_for(strategy)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(sharpness)
    answers = prefix_free_answers(40, seed=1)
    tree = AnswerTree(answers)
    rng = random.Random(2)
    for _ in range(6):
        prompt = [rng.randrange(128) for _ in range(rng.randrange(1, 9))]
        expected = int(answer_log_likelihoods(model, prompt, answers, 64, "cpu").argmax())
        for search_width in (1, 3, 100):
            assert most_likely_answer(model, prompt, tree, search_width, "cpu") == expected


def test_a_sharp_model_is_searched_without_scoring_every_answer():
    model = model_for("full")
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(30.0)
    answers = prefix_free_answers(40, seed=1)
    tree, prompt = AnswerTree(answers), [9, 8, 7]
    tokens_run = []
    hook = model.register_forward_pre_hook(
        lambda _, __, kwargs: tokens_run.append(kwargs["input_ids"].numel()), with_kwargs=True
    )
    try:
        best = most_likely_answer(model, prompt, tree, 1, "cpu")
    finally:
        hook.remove()
    assert best == int(answer_log_likelihoods(model, prompt, answers, 64, "cpu").argmax())
    every_prefix = sum(len(answer) - 1 for answer in answers)  # what scoring every answer runs after the prompt
    assert sum(tokens_run) - len(prompt) < every_prefix / 4


def test_ties_go_to_the_earliest_answer_like_argmax():
    model = tiny_family_model("llama").double().eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()  # every token has log-probability -log(128)
    answers = [[3, 4, 127], [5, 127], [6, 127], [7, 8, 9, 127]]
    assert int(answer_log_likelihoods(model, [1, 2], answers, 8, "cpu").argmax()) == 1
    for search_width in (1, 2, 8):
        assert most_likely_answer(model, [1, 2], AnswerTree(answers), search_width, "cpu") == 1


def test_the_answer_tree_refuses_empty_and_prefix_answers():
    with pytest.raises(ValueError, match="no empty one"):
        AnswerTree([[1, 2], []])
    with pytest.raises(ValueError, match="at least one"):
        AnswerTree([])
    with pytest.raises(ValueError, match="first equals or starts the second"):
        AnswerTree([[1, 2, 10], [1, 2]])
    check_prefix_free([[1, 2, 10], [1, 2, 11], [1, 3]], ["a", "b", "c"])
    with pytest.raises(ValueError, match="'b' and 'a'"):
        check_prefix_free([[1, 2, 10], [1, 2], [1, 3]], ["a", "b", "c"])


def test_scoring_and_search_on_a_hope_model_whose_memory_spans_chunks():
    model = tiny_model()  # chunk size 4: the prompts below end mid-chunk and span several chunks
    answers = [[3, 4, 90], [3, 5, 90], [6, 90], [7, 8, 9, 90], [7, 8, 90]]
    tree = AnswerTree(answers)
    with torch.no_grad():
        for prompt in ([1, 2, 3, 4, 5, 6, 7, 8, 9], [5] * 13, [11, 12]):
            expected = [naive_log_likelihood(model, prompt, answer) for answer in answers]
            scores = answer_log_likelihoods(model, prompt, answers, 2, "cpu")
            torch.testing.assert_close(scores, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-10)
            for search_width in (1, 8):
                assert most_likely_answer(model, prompt, tree, search_width, "cpu") == int(scores.argmax())
