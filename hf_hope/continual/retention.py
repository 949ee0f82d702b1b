"""Retention of general ability: the perplexity of a held-out general text before a stream and after each task.

The retention set is never trained on (by default the Python documentation's prose, `hf_hope.data.load_retention`,
which is in none of the built-in streams' tasks). Its blocks are cut as the stream's validation blocks are (same
`block_size` and `max_eval_blocks`). `retention = perplexity before training / perplexity after the stream`: 1.0
means the general ability is kept, 0.9 that the perplexity rose by 11%. It is measured on the text with every
stream, labelled ones included, since the question is whether the model still models general language.
"""

import hashlib
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from torch import nn

from .blocks import Tokenizer, task_blocks
from .perplexity import perplexity

RETENTION_SPLIT = "validation"


class RetentionSet:
    """The retention text as blocks, scored by perplexity."""

    metric = "perplexity"

    def __init__(
        self,
        data: Dataset | DatasetDict,
        tokenizer: Tokenizer,
        block_size: int,
        max_blocks: int | None,
        batch_size: int,
    ) -> None:
        data = data if isinstance(data, DatasetDict) else DatasetDict({RETENTION_SPLIT: data})
        self.blocks = task_blocks("retention", data, RETENTION_SPLIT, tokenizer, block_size, max_blocks)
        self.batch_size = batch_size

    def identity(self) -> str:
        """A fingerprint of the blocks, so that a run resumes only with the same retention text."""
        return hashlib.sha256(self.blocks.numpy().tobytes()).hexdigest()[:16]

    def evaluate(self, model: nn.Module, device: torch.device | str) -> float:
        return perplexity(model, self.blocks, self.batch_size, device)


def retention_summary(scores: list[float]) -> dict[str, Any]:
    """What results report: the perplexity before training and after each training run, and the retention ratio."""
    return {"metric": RetentionSet.metric, "scores": scores, "retention": scores[0] / scores[-1]}
