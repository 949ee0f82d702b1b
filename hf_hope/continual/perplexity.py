"""Perplexity of a causal LM on fixed-length blocks: exp of the mean next-token loss over every predicted token."""

import math

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def perplexity(model: nn.Module, blocks: torch.Tensor, batch_size: int, device: torch.device | str) -> float:
    """exp(mean token loss) of `model` over `blocks` (`[num_blocks, block_size]`), each block predicted alone."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in blocks.split(batch_size):
            input_ids = batch.to(device)
            logits = model(input_ids=input_ids).logits[:, :-1].float()
            targets = input_ids[:, 1:]
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum").item()
            count += targets.numel()
    finally:
        model.train(was_training)
    return math.exp(total / count)
