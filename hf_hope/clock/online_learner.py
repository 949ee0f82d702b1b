"""`OnlineLearner`: keep learning from a text stream at deployment time, each level at its own frequency.

Tokens arrive in any amounts; every `chunk_size` tokens the learner computes the next-token loss on the chunk
it has just read (with up to `context_size` earlier tokens as context, not trained on), and applies one
level-clocked optimizer step: fast levels adapt every chunk, slow levels every `period` chunks. Only the last
`context_size` tokens and the unfinished chunk are kept, so memory stays bounded however long the stream.
"""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..conversion.atomic_write import recover_swapped_folder, write_folder
from .clocked_optimizer import ClockedOptimizer
from .core import LevelClock
from .state_file import CLOCK_STATE_NAME, load_clock_state, save_clock_state

LEARNER_STATE_NAME = "online_learner.pt"


class OnlineLearner:
    """Level-clocked next-token learning on a stream.

    Args:
        model: a causal LM whose trainable parameters learn (tagged levels are read from the model).
        tokenizer: turns text into tokens; only needed to `observe` strings.
        chunk_size: tokens per update.
        context_size: earlier tokens kept as context for the next chunk (0 for none).
        learning_rate, weight_decay: of the AdamW optimizer, per level scaled by its `lr_scale`.
        max_grad_norm: gradient clipping before the clock (0 disables it).
        levels: optional `{name regex: {"period": P, "lr_scale": s}}` instead of the model's tags.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        chunk_size: int = 128,
        context_size: int = 128,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
        levels: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        if chunk_size < 2:
            raise ValueError(f"chunk_size={chunk_size} is invalid: a chunk needs at least 2 tokens to predict one.")
        if context_size < 0:
            raise ValueError(f"context_size={context_size} is invalid: it must be >= 0.")
        self.model, self.tokenizer = model, tokenizer
        self.chunk_size, self.context_size, self.max_grad_norm = chunk_size, context_size, max_grad_norm
        self.clock = LevelClock(model, levels)
        parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
        groups = self.clock.param_groups(parameters, lr=learning_rate)
        self.optimizer = ClockedOptimizer(torch.optim.AdamW(groups, weight_decay=weight_decay), self.clock)
        self._pending = torch.empty(0, dtype=torch.long)
        self._context = torch.empty(0, dtype=torch.long)
        self.tokens_seen = 0

    def observe(self, stream: str | Sequence[int] | torch.Tensor) -> list[float]:
        """Read more of the stream; learn from every chunk it completes. Returns those chunks' losses."""
        tokens = self._tokens(stream)
        self.tokens_seen += len(tokens)
        self._pending = torch.cat([self._pending, tokens])
        losses = []
        while len(self._pending) >= self.chunk_size:
            chunk, self._pending = self._pending[: self.chunk_size], self._pending[self.chunk_size :]
            losses.append(self._learn(chunk))
            self._context = torch.cat([self._context, chunk])[-self.context_size :] if self.context_size else chunk[:0]
        return losses

    def _learn(self, chunk: torch.Tensor) -> float:
        device = next(self.model.parameters()).device
        input_ids = torch.cat([self._context, chunk]).unsqueeze(0).to(device)
        labels = input_ids.clone()
        labels[:, : len(self._context)] = -100  # the context was learnt from already
        was_training = self.model.training
        self.model.train()
        loss = self.model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.grad is not None], self.max_grad_norm
            )
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.model.train(was_training)
        return loss.item()

    def _tokens(self, stream: str | Sequence[int] | torch.Tensor) -> torch.Tensor:
        if isinstance(stream, str):
            if self.tokenizer is None:
                raise ValueError("OnlineLearner got text but has no tokenizer; pass tokenizer=... or token ids.")
            return torch.tensor(self.tokenizer(stream, add_special_tokens=False)["input_ids"], dtype=torch.long)
        tokens = torch.as_tensor(stream, dtype=torch.long).flatten()
        return tokens.cpu()

    def state_dict(self) -> dict[str, Any]:
        """Clock, optimizer, the unfinished chunk, the context and the token count (not the model's weights)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "pending": self._pending.clone(),
            "context": self._context.clone(),
            "tokens_seen": self.tokens_seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self._pending, self._context = state["pending"].clone(), state["context"].clone()
        self.tokens_seen = int(state["tokens_seen"])

    def save(self, directory: str | os.PathLike) -> None:
        """Save the model (`save_pretrained`), the clock (its own file) and the rest of the learner's state.

        The three are written into a staging folder that then replaces `directory` as a whole, so an interrupted
        save leaves the previous save, never a new model next to an old learner state.
        """
        rest = self.state_dict()
        rest["optimizer"] = self.optimizer.optimizer.state_dict()  # the clock's part is in CLOCK_STATE_NAME

        def write(staging: Path) -> None:
            self.model.save_pretrained(staging)
            save_clock_state(self.clock, staging / CLOCK_STATE_NAME)
            torch.save(rest, staging / LEARNER_STATE_NAME)

        write_folder(directory, write, overwrite=True)

    def load(self, directory: str | os.PathLike) -> None:
        """Restore the learner's state saved by `save` (load the model itself with `from_pretrained`)."""
        directory = recover_swapped_folder(directory)
        paths = [directory / LEARNER_STATE_NAME, directory / CLOCK_STATE_NAME]
        missing = [path for path in paths if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{', '.join(map(str, missing))} not found: {directory} was not written by OnlineLearner.save."
            )
        try:
            rest = torch.load(paths[0], weights_only=True)
        except Exception as error:  # damaged bytes fail anywhere in the unpickler (KeyError, EOFError, ...)
            raise ValueError(
                f"{paths[0]} cannot be read ({' '.join(str(error).split()[:12])} ...): the file is damaged or "
                "truncated. Load an earlier save."
            ) from error
        self.optimizer.optimizer.load_state_dict(rest["optimizer"])
        load_clock_state(self.clock, paths[1])
        self._pending, self._context = rest["pending"].clone(), rest["context"].clone()
        self.tokens_seen = int(rest["tokens_seen"])
