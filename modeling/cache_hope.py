"""`HopeCache`: the constant-size generation cache of a HOPE model (one `MemoryState` per layer)."""

import torch
from transformers.cache_utils import Cache

from .memory_state import MemoryState


class HopeCacheLayer:
    """One layer's slot in a `HopeCache`: its memory weights, momentum, chunk-start weights, conv window, position."""

    is_compileable = False

    def __init__(self) -> None:
        self.state: MemoryState | None = None

    def reset(self) -> None:
        self.state = None

    def _map(self, fn) -> None:
        if self.state is not None:
            self.state = self.state.map_tensors(fn)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map(lambda tensor: tensor.index_select(0, beam_idx.to(tensor.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda tensor: tensor.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map(lambda tensor: tensor[indices])

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError(
            "A HopeCache cannot be cropped: the memories have absorbed every token and cannot forget a suffix. "
            "Recompute from the prompt instead."
        )


class HopeCache(Cache):
    """Per-layer memory states of a HOPE model. Its size depends on the batch and the model, never on the length.

    `generate()` creates one automatically; pass it back as `cache` to continue from where a call ended.
    """

    def __init__(self, config=None, num_hidden_layers: int | None = None) -> None:
        if num_hidden_layers is None:
            if config is None:
                raise ValueError("HopeCache needs a config or num_hidden_layers.")
            num_hidden_layers = config.num_hidden_layers
        super().__init__(layers=[HopeCacheLayer() for _ in range(num_hidden_layers)])

    def get_state(self, layer_idx: int) -> MemoryState | None:
        return self.layers[layer_idx].state

    def set_state(self, layer_idx: int, state: MemoryState) -> None:
        self.layers[layer_idx].state = state

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens absorbed so far (padding included)."""
        state = self.layers[layer_idx].state if layer_idx < len(self.layers) else None
        return 0 if state is None else state.position

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_initialized(self) -> bool:
        return all(layer.state is not None for layer in self.layers)

    @property
    def batch_size(self) -> int:
        states = [layer.state for layer in self.layers if layer.state is not None]
        return states[0].weights["w1"].shape[0] if states else -1

    def num_bytes(self) -> int:
        """Bytes held by all layers' states."""
        return sum(layer.state.num_bytes() for layer in self.layers if layer.state is not None)
