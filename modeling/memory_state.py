"""The in-context state of one mixer layer: memory weights, momentum, chunk-start weights, conv window, position.

Per head, the mixer holds two memories, stored as `[batch, heads, out, in]` matrices:
- `"generator"`: the generator memories of keys, values, learning rate and retention stacked row-wise
  (`2 * head_dim + 2` rows). They share their inputs and update rule, so stacking them is exact.
- `"w1"`, `"w2"`: the main memory `M(z) = z + W1 silu(W2 z)`.
"""

from dataclasses import dataclass

import torch


@dataclass
class MemoryState:
    """Everything a mixer layer carries from one call to the next; its size does not depend on the length."""

    weights: dict[str, torch.Tensor]
    chunk_start: dict[str, torch.Tensor]
    momentum: dict[str, torch.Tensor] | None = None
    conv: torch.Tensor | None = None
    position: int = 0

    def map_tensors(self, fn) -> "MemoryState":
        """A new state with `fn` applied to every tensor (batch selection, device moves, detaching)."""
        return MemoryState(
            weights={name: fn(value) for name, value in self.weights.items()},
            chunk_start={name: fn(value) for name, value in self.chunk_start.items()},
            momentum=None if self.momentum is None else {name: fn(value) for name, value in self.momentum.items()},
            conv=None if self.conv is None else fn(self.conv),
            position=self.position,
        )

    def num_bytes(self) -> int:
        """Size of the state: every tensor counted in full, which is what it holds mid-chunk.

        At a chunk boundary the chunk-start weights share storage with the weights, so it then holds less.
        """
        tensors = [*self.weights.values(), *self.chunk_start.values()]
        tensors += [] if self.momentum is None else list(self.momentum.values())
        tensors += [] if self.conv is None else [self.conv]
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)
