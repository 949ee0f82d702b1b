"""The in-context state of one mixer layer, the interface the memory ops need of a mixer, and the chunk clock.

Per head, the mixer holds two memories, stored as `[batch, heads, out, in]` matrices:
- `"generator"`: the generator memories of keys, values, learning rate and retention stacked row-wise
  (`2 * head_dim + 2` rows). They share their inputs and update rule, so stacking them is exact.
- `"w1"`, `"w2"`: the main memory `M(z) = z + W1 silu(W2 z)`.

The memory ops (`chunk_forward`, `decode_forward`, `recurrent_forward`) all take a `MemoryMixer`, run its memories
over `[batch, heads, length, head_dim]` inputs and return the main memory's reads with the `MemoryState` after them.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

Rates = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]
"""Per-token `eta`, `log alpha`, `log beta` and write flag (None: no padding), each `[batch, heads, length]`."""


@dataclass
class MemoryState:
    """Everything a mixer layer carries from one call to the next; its size does not depend on the length."""

    weights: dict[str, torch.Tensor]
    chunk_start: dict[str, torch.Tensor]
    momentum: dict[str, torch.Tensor] | None = None
    conv: torch.Tensor | None = None
    position: int = 0

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "MemoryState":
        """A new state with `fn` applied to every tensor (batch selection, device moves, detaching)."""
        return MemoryState(
            weights={name: fn(value) for name, value in self.weights.items()},
            chunk_start={name: fn(value) for name, value in self.chunk_start.items()},
            momentum=None if self.momentum is None else {name: fn(value) for name, value in self.momentum.items()},
            conv=None if self.conv is None else fn(self.conv),
            position=self.position,
        )

    def conv_tails(self, head_dim: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The conv window split into the queries' channels and the keys' and values' (both None when empty)."""
        if self.conv is None:
            return None, None
        return self.conv[..., :head_dim], self.conv[..., head_dim:]

    def num_bytes(self) -> int:
        """Size of the state: every tensor counted in full, which is what it holds mid-chunk.

        At a chunk boundary the chunk-start weights share storage with the weights, so it then holds less.
        """
        tensors = [*self.weights.values(), *self.chunk_start.values()]
        tensors += [] if self.momentum is None else list(self.momentum.values())
        tensors += [] if self.conv is None else [self.conv]
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def starts_chunk(position: int, chunk_size: int) -> bool:
    """Whether the token at `position` opens a chunk: there the chunk-start weights are refreshed to the weights."""
    return position % chunk_size == 0


@runtime_checkable
class MemoryMixer(Protocol):
    """What the memory ops read of a mixer (`SelfModifyingTitans` is the implementation).

    The chunk path and the decoding step use the three feature methods; the token-by-token oracle uses none of them
    and transcribes the features itself from the raw parameters, so it stays independent of the code it checks.
    Shapes: `[batch, heads, length, ...]` tensors; `mask` is `[batch, 1, length]` (1 real token, 0 padding) or None.
    """

    head_dim: int
    """Width `d` of each head: of the queries, keys, values and of the main memory's input and output."""
    chunk_size: int
    """Tokens per chunk: inside a chunk every inner gradient is taken at the chunk-start state."""
    conv_size: int
    """Window of the causal depthwise convolution on queries, keys and values."""
    self_modifying: bool
    """Whether the generator memories learn in context (False: plain Titans, static generators)."""
    self_generated_values: bool
    """Whether the main memory's target is `M(v)` rather than `v`."""
    recompute_chunks: int | None
    """Chunks per group of the chunk path's activation checkpointing under autograd; None keeps every chunk."""
    memory_lr_max: float
    """Upper bound of the inner learning rate: `eta_t = memory_lr_max * sigmoid(.)`."""
    conv_weight: torch.Tensor
    """Depthwise conv taps `[heads, 3 * head_dim, conv_size]`: query channels, then key and value channels."""
    eta_bias: torch.Tensor
    """`[heads]`, added to the generated learning-rate logit (generator row `2 * head_dim`)."""
    alpha_bias: torch.Tensor
    """`[heads]`, added to the generated retention logit (generator row `2 * head_dim + 1`)."""
    momentum_logit: torch.Tensor
    """`[heads]`: the momentum decay is `beta = sigmoid(momentum_logit)`, the same for every token."""

    def queries(
        self, queries_in: torch.Tensor, mask: torch.Tensor | None, tail: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries `[batch, heads, length, head_dim]` (conv, SiLU, L2-normalised) from the static projections
        `queries_in` of the same shape, continuing the conv window `tail` `[batch, heads, conv_size - 1,
        head_dim]` (None: empty); returns them with the new tail."""
        ...

    def keys_values(
        self, generated: torch.Tensor, mask: torch.Tensor | None, tail: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys and values `[batch, heads, length, head_dim]` (conv, SiLU, L2-normalised) from the generators'
        outputs `generated` `[batch, heads, length, 2 * head_dim + 2]`, continuing the window `tail`
        `[batch, heads, conv_size - 1, 2 * head_dim]`; returns them with the new tail."""
        ...

    def rates(self, generated: torch.Tensor, mask: torch.Tensor | None) -> Rates:
        """Per-token `eta`, `log alpha`, `log beta` and write flag, each `[batch, heads, length]`, from the
        generators' outputs. Padding gets `eta = 0`, `alpha = beta = 1` (a no-op); without a mask the write
        flag is None and `log beta` has batch dimension 1."""
        ...


MemoryForward = Callable[
    [MemoryMixer, torch.Tensor, torch.Tensor, torch.Tensor | None, MemoryState], tuple[torch.Tensor, MemoryState]
]
"""A memory op: `(mixer, queries_in, generator_in, mask [batch, length] or None, state) -> (reads, new state)`."""
