"""Scoring candidate answers after a prompt: every candidate's log-likelihood, or the exact most likely one fast.

`log p(answer | prompt)` is the SUM of the answer tokens' log-probabilities. Both functions run the prompt once
and repeat its KV cache over a batch of continuations.

`answer_log_likelihoods` scores every candidate (cost: all candidates' tokens). `most_likely_answer` finds the
argmax without scoring them all: a best-first search over the prefix tree of the candidates. Every token's
log-probability is <= 0, so a prefix's score bounds the score of every answer that starts with it; the search
extends the best-scored prefixes first and stops when the best entry is a complete answer, which then scores at
least as much as anything still unexplored. A confident model extends little more than its own answer's
prefixes, a few forward passes of a few tokens instead of hundreds.
"""

import copy
import heapq
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

Prefix = tuple[int, ...]


def log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Log-softmax over the vocabulary in float64, so that sums of many tokens compare exactly enough."""
    return logits.to(torch.float64).log_softmax(-1)


def _run_prompt(model: nn.Module, prompt_ids: Sequence[int], device: torch.device | str):
    """The prompt's log-probabilities of the next token, its KV cache and its length."""
    prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    output = model(input_ids=prompt, use_cache=True)
    return log_probabilities(output.logits[0, -1]), output.cache, prompt.shape[1]


def _continue(
    model: nn.Module, cache, prompt_length: int, continuations: Sequence[Sequence[int]], device: torch.device | str
) -> torch.Tensor:
    """The float64 log-probabilities after each position of each continuation of the cached prompt.

    Shape `[len(continuations), longest, vocabulary]`; continuations are right-padded (masked out), so the rows
    past a continuation's length mean nothing.
    """
    longest = max(len(tokens) for tokens in continuations)
    inputs = torch.tensor([list(tokens) + [0] * (longest - len(tokens)) for tokens in continuations], device=device)
    real = torch.tensor([[k < len(tokens) for k in range(longest)] for tokens in continuations], device=device)
    attention_mask = torch.cat(
        [torch.ones(len(continuations), prompt_length, dtype=torch.long, device=device), real.long()], 1
    )
    position_ids = torch.arange(prompt_length, prompt_length + longest, device=device).expand(len(continuations), -1)
    batch_cache = copy.deepcopy(cache)
    batch_cache.batch_repeat_interleave(len(continuations))
    logits = model(
        input_ids=inputs, attention_mask=attention_mask, position_ids=position_ids, cache=batch_cache, use_cache=True
    ).logits
    return log_probabilities(logits)


@torch.no_grad()
def answer_log_likelihoods(
    model: nn.Module,
    prompt_ids: Sequence[int],
    answers: Sequence[Sequence[int]],
    batch_size: int,
    device: torch.device | str,
) -> torch.Tensor:
    """`log p(answer | prompt)` (summed over the answer's tokens) of every answer, float64, shape `[len(answers)]`.

    The prompt runs once; its KV cache is repeated over `batch_size` answers at a time (each runs its tokens but
    the last, which needs no input of its own). The model must be in the mode the caller wants (eval for scoring).
    """
    first, cache, prompt_length = _run_prompt(model, prompt_ids, device)
    scores = []
    for start in range(0, len(answers), batch_size):
        chunk = [list(answer) for answer in answers[start : start + batch_size]]
        score = first[[answer[0] for answer in chunk]]
        if max(len(answer) for answer in chunk) > 1:
            following = _continue(model, cache, prompt_length, [answer[:-1] for answer in chunk], device)
            for row, answer in enumerate(chunk):
                positions = torch.arange(len(answer) - 1, device=device)
                score[row] += following[row, positions, answer[1:]].sum()
        scores.append(score)
    return torch.cat(scores)


class AnswerTree:
    """Candidate answers (token id sequences, none a prefix of another) as a prefix tree.

    `names` (default: the positions) name the answers in the error raised when one starts another.

    `next_tokens[prefix]` lists the tokens that extend a proper prefix of some answer (`()` is the root);
    `answer_index[answer]` is the position of a complete answer in the candidates; `lowest_index[prefix]` the
    lowest candidate position under a prefix (for ties, broken towards the earlier candidate like `argmax`).
    """

    def __init__(self, answers: Sequence[Sequence[int]], names: Sequence[str] | None = None) -> None:
        self.answers = [tuple(answer) for answer in answers]
        if not self.answers or not all(self.answers):
            raise ValueError("Give at least one candidate answer, and no empty one.")
        check_prefix_free(self.answers, names or [str(index) for index in range(len(self.answers))])
        self.answer_index = {answer: index for index, answer in enumerate(self.answers)}
        self.next_tokens: dict[Prefix, list[int]] = {}
        self.lowest_index: dict[Prefix, int] = {}
        for index, answer in enumerate(self.answers):
            for length in range(len(answer)):
                tokens = self.next_tokens.setdefault(answer[:length], [])
                if answer[length] not in tokens:
                    tokens.append(answer[length])
                self.lowest_index.setdefault(answer[: length + 1], index)


@torch.no_grad()
def most_likely_answer(
    model: nn.Module,
    prompt_ids: Sequence[int],
    tree: AnswerTree,
    search_width: int,
    device: torch.device | str,
) -> int:
    """The position in `tree.answers` of the answer with the highest `log p(answer | prompt)`; exact.

    Best-first search: each forward pass extends the `search_width` best-scored open prefixes (all of them better
    than any complete answer found so far) by every token the tree allows after them; the search stops when the
    best entry is a complete answer. The result is the argmax of `answer_log_likelihoods` (ties to the lower
    position), up to the float rounding of two different batchings.
    """
    first, cache, prompt_length = _run_prompt(model, prompt_ids, device)
    frontier: list[tuple[float, int, Prefix]] = []  # (-score, lowest candidate position, prefix): a min-heap

    def push_extensions(prefix: Prefix, score: float, next_log_probabilities: torch.Tensor) -> None:
        tokens = tree.next_tokens[prefix]
        for token, value in zip(tokens, next_log_probabilities[tokens].tolist(), strict=True):
            extended = (*prefix, token)
            heapq.heappush(frontier, (-(score + value), tree.lowest_index[extended], extended))

    push_extensions((), 0.0, first)
    while True:
        expanding = []
        while frontier and len(expanding) < search_width and frontier[0][2] not in tree.answer_index:
            expanding.append(heapq.heappop(frontier))
        if not expanding:
            return tree.answer_index[frontier[0][2]]
        following = _continue(model, cache, prompt_length, [prefix for _, _, prefix in expanding], device)
        for row, (negative_score, _, prefix) in enumerate(expanding):
            push_extensions(prefix, -negative_score, following[row, len(prefix) - 1])


def check_prefix_free(answers: Sequence[Sequence[int]], names: Sequence[str]) -> None:
    """Refuse candidate answers of which one equals or starts another: their summed scores would not compare."""
    ordered = sorted(zip((tuple(answer) for answer in answers), names, strict=True))
    for (shorter, first), (longer, second) in pairwise(ordered):
        if longer[: len(shorter)] == shorter:  # sorted: a prefix is followed by the answers it starts
            raise ValueError(
                f"The answers of labels {first!r} and {second!r} tokenize so that the first equals or starts the "
                "second. Give the labels distinct names and end answer_template with a separator (e.g. a newline)."
            )
