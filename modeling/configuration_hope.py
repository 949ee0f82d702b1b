"""Configuration of the HOPE model (self-modifying Titans + Continuum Memory System)."""

import math
from collections.abc import Callable
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .levels import check_level_spec

CMS_VARIANTS = ("sequential", "independent")
MEMORY_IMPLEMENTATIONS = ("auto", "triton", "chunk", "recurrent")
DEFAULT_CMS_LEVELS = ({"intermediate_size": 4, "period": 1}, {"intermediate_size": 4, "period": 8})


@strict
class HopeConfig(PreTrainedConfig):
    r"""
    Configuration of a [`HopeModel`]: a stack of HOPE blocks, each a self-modifying Titans mixer followed by a
    Continuum Memory System (CMS) of MLP levels that update at different frequencies.

    Args:
        vocab_size: Size of the token vocabulary.
        hidden_size: Width of the residual stream.
        num_hidden_layers: Number of HOPE blocks.
        num_heads: Number of memory heads in each mixer.
        head_dim: Width of each head; defaults to `hidden_size // num_heads`.
        chunk_size: Tokens per chunk of the in-context memory update. Inside a chunk every inner gradient is taken
            at the memory state reached at the end of the previous chunk; 1 gives the fully sequential recurrence.
        conv_size: Window of the short causal depthwise convolution on queries, keys and values.
        memory_expansion: Hidden width of the main memory MLP, as a multiple of `head_dim`.
        memory_lr_max: Upper bound of the in-context learning rate `eta_t = memory_lr_max * sigmoid(.)`. Inside a
            chunk every token's step uses the same chunk-start gradient, so a run of repeated tokens adds up to
            `chunk_size` equal steps; the default, `min(0.1, 0.25 / chunk_size)`, keeps that sum stable.
        self_modifying: Whether the generator memories of keys, values, learning rate and retention learn in
            context. `False` gives plain Titans with static projections.
        self_generated_values: Whether the main memory's target is `M(v_t)` (self-generated) rather than `v_t`.
        cms_levels: CMS levels from the first applied to the last (levels 1, 2, ... in that order), each a dict with
            `intermediate_size` (int), `period` (optimizer steps between updates, `None` for frozen; 1 when
            omitted) and optionally `lr_scale` (a finite float > 0, default 1.0).
            The default is two levels of width `4 * hidden_size`, updated every step and every 8 steps.
        cms_variant: `"sequential"` (a chain `z <- z + MLP_l(norm(z))`) or `"independent"` (a learnable
            weighted sum of the level outputs).
        memory_implementation: `"auto"` (the default: the Triton kernels of the `triton` extra on CUDA, the torch
            chunk path elsewhere), `"triton"` (the kernels, an error where they cannot run), `"chunk"` (the torch
            chunk-parallel dual form) or `"recurrent"` (the token-by-token reference, slow but the oracle).
        memory_recompute_chunks: During training, keep the in-context memory's state once every this many chunks
            and recompute the chunks in between during backward (activation checkpointing inside the mixer). The
            memory's saved activations then fall from one state per chunk to one per group, at the cost of running
            its forward twice; results are the same up to rounding. `None` (the default) keeps every chunk's state. Long
            sequences are where it pays: at 32K tokens and chunks of 64, 16 keeps 32 states instead of 512.
        rms_norm_eps: Epsilon of every RMSNorm.
        initializer_range: Standard deviation of the normal initialisation of projections and embeddings.
        use_cache: Whether `forward` returns a [`HopeCache`] by default.
        pad_token_id: Id of the padding token (its embedding gets no gradient): `None` or an id in the vocabulary.
        tie_word_embeddings: Whether the output projection shares the input embedding matrix.

    Generic code may read `num_attention_heads`, the standard name of `num_heads` (`attribute_map`).

    ```python
    >>> import hf_hope
    >>> from transformers import AutoConfig, AutoModelForCausalLM
    >>> config = AutoConfig.for_model("hope", vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_heads=4)
    >>> model = AutoModelForCausalLM.from_config(config)
    ```
    """

    model_type = "hope"
    keys_to_ignore_at_inference = ["cache"]
    attribute_map = {"num_attention_heads": "num_heads"}

    vocab_size: int = 32000
    hidden_size: int = 512
    num_hidden_layers: int = 8
    num_heads: int = 8
    head_dim: int | None = None
    chunk_size: int = 64
    conv_size: int = 4
    memory_expansion: int = 2
    memory_lr_max: float | None = None
    self_modifying: bool = True
    self_generated_values: bool = True
    cms_levels: list | None = None
    cms_variant: str = "sequential"
    memory_implementation: str = "auto"
    memory_recompute_chunks: int | None = None
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> "HopeConfig":
        """`PretrainedConfig.from_dict`, refusing the config of another architecture (it would read as defaults)."""
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(
                f"This config.json is of model type {model_type!r}, not {cls.model_type!r}: HopeConfig cannot read "
                f"another architecture's config. Load that folder with AutoModelForCausalLM, or give a HOPE folder."
            )
        return super().from_dict(config_dict, **kwargs)

    def __post_init__(self, **kwargs):
        # Standard names (`num_attention_heads=`) must be applied before the fields they alias are validated and used.
        for alias, field in self.attribute_map.items():
            if alias in kwargs:
                setattr(self, field, kwargs.pop(alias))
        _require_positive("vocab_size", self.vocab_size)
        _require_positive("hidden_size", self.hidden_size)
        _require_positive("num_hidden_layers", self.num_hidden_layers)
        _require_positive("num_heads", self.num_heads)
        if self.head_dim is None:
            if self.hidden_size % self.num_heads != 0:
                raise ValueError(
                    f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}: choose a "
                    "hidden_size that is a multiple of num_heads, or set head_dim explicitly."
                )
            self.head_dim = self.hidden_size // self.num_heads
        _require_positive("head_dim", self.head_dim)
        _require_positive("chunk_size", self.chunk_size)
        _require_positive("conv_size", self.conv_size)
        _require_positive("memory_expansion", self.memory_expansion)
        if self.memory_lr_max is None:
            self.memory_lr_max = min(0.1, 0.25 / self.chunk_size)
        _require_finite("memory_lr_max", self.memory_lr_max, "in (0, 1]", lambda value: 0.0 < value <= 1.0)
        _require_finite("rms_norm_eps", self.rms_norm_eps, "> 0", lambda value: value > 0.0)
        _require_finite("initializer_range", self.initializer_range, ">= 0", lambda value: value >= 0.0)
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id={self.pad_token_id!r} is outside the vocabulary (ids 0 to {self.vocab_size - 1}): "
                "give the id of a token below vocab_size, or pad_token_id=None."
            )
        if self.cms_variant not in CMS_VARIANTS:
            raise ValueError(f"cms_variant={self.cms_variant!r} is unknown: allowed values are {CMS_VARIANTS}.")
        if self.memory_implementation not in MEMORY_IMPLEMENTATIONS:
            raise ValueError(
                f"memory_implementation={self.memory_implementation!r} is unknown: allowed values are "
                f"{MEMORY_IMPLEMENTATIONS}."
            )
        if self.memory_recompute_chunks is not None:
            _require_positive("memory_recompute_chunks", self.memory_recompute_chunks)
        if self.cms_levels is None:
            self.cms_levels = [
                {"intermediate_size": level["intermediate_size"] * self.hidden_size, "period": level["period"]}
                for level in DEFAULT_CMS_LEVELS
            ]
        self.cms_levels = normalize_cms_levels(self.cms_levels)
        super().__post_init__(**kwargs)


def normalize_cms_levels(levels: list) -> list[dict]:
    """Validate a `cms_levels` list and return it with every level as `{intermediate_size, period, lr_scale}`."""
    if not isinstance(levels, (list, tuple)) or len(levels) == 0:
        raise ValueError(
            f"cms_levels={levels!r} is invalid: give a non-empty list of dicts such as "
            '[{"intermediate_size": 1024, "period": 1}, {"intermediate_size": 1024, "period": 16}].'
        )
    normalized = []
    for index, level in enumerate(levels):
        where = f"cms_levels[{index}]"
        level = check_level_spec(level, f"{where}.", allowed_keys=("intermediate_size",))
        if "intermediate_size" not in level:
            raise ValueError(f"{where} has no intermediate_size: give the width of the level's MLP (an int >= 1).")
        size = level["intermediate_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{where}.intermediate_size={size!r} is invalid: it must be an int >= 1.")
        normalized.append({"intermediate_size": size, "period": level["period"], "lr_scale": level["lr_scale"]})
    return normalized


def _require_positive(field: str, value: int) -> None:
    """A ValueError unless `value` is an int >= 1 (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field}={value!r} is invalid: it must be an int >= 1.")


def _require_finite(field: str, value: float, bounds: str, in_range: Callable[[float], bool]) -> None:
    """A ValueError unless `value` is a finite number (a bool is not) that `in_range` accepts (`bounds` says how)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not in_range(value):
        raise ValueError(f"{field}={value!r} is invalid: it must be a finite number {bounds}.")


__all__ = ["HopeConfig"]
