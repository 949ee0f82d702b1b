"""Language-modelling data for continual fine-tuning: texts -> token ids -> fixed-length blocks."""

from collections.abc import Callable, Sequence

import torch
from datasets import DatasetDict
from torch import nn
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from .perplexity import perplexity

Tokenizer = PreTrainedTokenizerBase | Callable[[str], Sequence[int]]
Tasks = Sequence[tuple[str, DatasetDict]]


def tokenize_texts(texts: Sequence[str], tokenizer: Tokenizer) -> list[int]:
    """Concatenate the token ids of `texts`, separated by the tokenizer's EOS token when it has one.

    `tokenizer` is a `transformers` tokenizer (no special tokens are added inside a text) or any callable that
    maps one text to a list of token ids.
    """
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        separator = tokenizer.eos_token_id
    else:
        encoded = [list(tokenizer(text)) for text in texts]
        separator = None
    ids: list[int] = []
    for text_ids in encoded:
        ids.extend(text_ids)
        if separator is not None:
            ids.append(separator)
    return ids


def group_blocks(ids: Sequence[int], block_size: int, max_blocks: int | None = None) -> torch.Tensor:
    """Cut `ids` into `[num_blocks, block_size]` (the incomplete tail is dropped), keeping at most `max_blocks`."""
    num_blocks = len(ids) // block_size
    if max_blocks is not None:
        num_blocks = min(num_blocks, max_blocks)
    return torch.tensor(list(ids[: num_blocks * block_size]), dtype=torch.long).view(num_blocks, block_size)


def task_blocks(
    task: str,
    dataset: DatasetDict,
    split: str,
    tokenizer: Tokenizer,
    block_size: int,
    max_blocks: int | None = None,
) -> torch.Tensor:
    """The blocks of one split of one task; a clear error if the split is missing or too short for one block."""
    if split not in dataset:
        raise ValueError(f"Task {task!r} has no {split!r} split (it has {sorted(dataset)}).")
    if "text" not in dataset[split].column_names:
        raise ValueError(f"Task {task!r}: the {split!r} split has no 'text' column ({dataset[split].column_names}).")
    blocks = group_blocks(tokenize_texts(dataset[split]["text"], tokenizer), block_size, max_blocks)
    if len(blocks) == 0:
        raise ValueError(
            f"Task {task!r}: the {split!r} split has {dataset[split].num_rows} examples, fewer than one block of "
            f"{block_size} tokens. Give it more text or lower block_size."
        )
    return blocks


class BlockDataset(Dataset):
    """Blocks as causal-LM examples (`labels` = `input_ids`; the model shifts them)."""

    def __init__(self, blocks: torch.Tensor) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        block = self.blocks[index]
        return {"input_ids": block, "labels": block}


class LanguageModellingStream:
    """The tasks of a language-modelling stream as blocks: training datasets, and perplexity per task."""

    metric = "perplexity"
    higher_is_better = False
    collator = None

    def __init__(
        self,
        tasks: Tasks,
        tokenizer: Tokenizer,
        block_size: int,
        batch_size: int,
        max_eval_blocks: int | None,
        eval_batch_size: int,
    ) -> None:
        self.train = [task_blocks(name, data, "train", tokenizer, block_size) for name, data in tasks]
        self.validation = [
            task_blocks(name, data, "validation", tokenizer, block_size, max_eval_blocks) for name, data in tasks
        ]
        for (name, _), blocks in zip(tasks, self.train, strict=True):
            if len(blocks) < batch_size:
                raise ValueError(
                    f"Task {name!r} has {len(blocks)} training blocks of {block_size} tokens, fewer than one "
                    f"batch of {batch_size}. Lower batch_size or block_size, or give it more text."
                )
        self.block_size, self.eval_batch_size = block_size, eval_batch_size

    def train_dataset(self, indices: Sequence[int]) -> Dataset:
        return BlockDataset(torch.cat([self.train[index] for index in indices]))

    def budget(self, steps: int, batch_size: int) -> dict[str, int]:
        return {"train_tokens": steps * batch_size * self.block_size}

    def evaluate(self, model: nn.Module, device: torch.device | str) -> list[float]:
        return [perplexity(model, blocks, self.eval_batch_size, device) for blocks in self.validation]
