"""HOPE as a `transformers` model: `HopeModel` and `HopeForCausalLM`.

Each block is `h = x + SelfModifyingTitans(RMSNorm(x))` followed by a Continuum Memory System whose levels
normalise their own inputs (`z <- z + MLP_l(norm(z))`). The mixer's memories learn in context; their states live in
a `HopeCache` of constant size.
"""

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel, slice_logits_to_keep
from transformers.utils import can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .cache_hope import HopeCache
from .cms import ContinuumMemory
from .configuration_hope import HopeConfig
from .normalization import HopeRMSNorm
from .titans import SelfModifyingTitans


class HopeDecoderLayer(GradientCheckpointingLayer):
    """One HOPE block: self-modifying Titans mixer, then the CMS chain."""

    def __init__(self, config: HopeConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.input_layernorm = HopeRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mixer = SelfModifyingTitans(config)
        self.cms = ContinuumMemory.from_level_specs(
            config.hidden_size, config.cms_levels, config.cms_variant, config.rms_norm_eps
        )
        self.memory_implementation = config.memory_implementation

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: HopeCache | None = None,
        **kwargs,
    ) -> torch.Tensor:
        state = cache.get_state(self.layer_idx) if cache is not None else None
        mixed, new_state = self.mixer(
            self.input_layernorm(hidden_states), attention_mask, state, implementation=self.memory_implementation
        )
        if cache is not None:
            cache.set_state(self.layer_idx, new_state)
        return self.cms(hidden_states + mixed)


class HopePreTrainedModel(PreTrainedModel):
    config: HopeConfig
    config_class = HopeConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["HopeDecoderLayer"]
    _skip_keys_device_placement = ["cache"]
    _is_stateful = True
    _can_record_outputs = {"hidden_states": HopeDecoderLayer}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, SelfModifyingTitans):
            module.reset_memory_parameters(self.config.initializer_range)
        elif isinstance(module, ContinuumMemory) and module.variant == "independent":
            init.constant_(module.level_weights, 1.0 / len(module.levels))

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # HOPE has no key/value cache: `HopeModel.forward` creates a `HopeCache` when one is needed.
        return False

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, recording all three Auto classes in `auto_map`.

        The modeling files are copied next to the weights, so `trust_remote_code=True` loads the checkpoint where
        hf_hope is not installed.
        """
        module = HopeModel.__module__.rsplit(".", 1)[-1]
        self.config.auto_map = {
            "AutoConfig": f"{HopeConfig.__module__.rsplit('.', 1)[-1]}.HopeConfig",
            "AutoModel": f"{module}.HopeModel",
            "AutoModelForCausalLM": f"{module}.HopeForCausalLM",
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, but a checkpoint whose weights do not match the config is an error.

        A missing, unexpected or mis-shaped tensor would otherwise leave part of the model randomly initialised
        or silently drop trained weights.
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False)
        model, loading_info = super().from_pretrained(
            *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
        if ignore_mismatched_sizes:
            loading_info["mismatched_keys"] = set()
        # A base model loaded from a CausalLM checkpoint legitimately leaves the head's weights unused.
        loading_info["unexpected_keys"] = {
            key for key in loading_info["unexpected_keys"] if key.split(".")[0] != "lm_head"
        }
        problems = {kind: names for kind, names in loading_info.items() if kind != "error_msgs" and names}
        if problems:
            listed = "; ".join(f"{kind}: {sorted(map(str, names))[:20]}" for kind, names in problems.items())
            raise ValueError(
                f"The checkpoint does not match the {type(model).__name__} built from its config ({listed}). "
                "Check that config.json belongs to these weights (layers, widths, heads, cms_levels)."
            )
        return (model, loading_info) if output_loading_info else model


class HopeModel(HopePreTrainedModel):
    """Embeddings, a stack of HOPE blocks and a final RMSNorm."""

    def __init__(self, config: HopeConfig) -> None:
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(HopeDecoderLayer(config, idx) for idx in range(config.num_hidden_layers))
        self.norm = HopeRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        attention_mask (`torch.Tensor` of shape `(batch_size, past_length + sequence_length)`, *optional*):
            1 for real tokens, 0 for padding. Padded positions never write to any memory; only the last
            `sequence_length` columns are read.
        cache (`HopeCache`, *optional*):
            Memory states returned by a previous call; the call continues from them.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if cache is not None and not isinstance(cache, HopeCache):
            raise TypeError(
                f"HOPE keeps memory states, not keys and values: cache must be a HopeCache, got "
                f"{type(cache).__name__}. Leave it as None to let the model create one."
            )
        if use_cache and cache is None:
            cache = HopeCache(config=self.config)
        memory_mask = _memory_mask(attention_mask, inputs_embeds.shape[1])

        hidden_states = inputs_embeds
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(hidden_states, attention_mask=memory_mask, cache=cache)
        return BaseModelOutputWithPast(
            last_hidden_state=self.norm(hidden_states),
            cache=cache if use_cache else None,
        )


def _memory_mask(attention_mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """The `[batch, length]` write mask of the current tokens, or None when every token is real."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise ValueError(
            f"HOPE takes a 2D attention_mask of shape (batch, length) with 1 for tokens and 0 for padding; got "
            f"shape {tuple(attention_mask.shape)}."
        )
    if attention_mask.shape[1] < length:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[1]} positions but the input has {length} tokens."
        )
    mask = attention_mask[:, attention_mask.shape[1] - length :]
    return None if bool(mask.all()) else mask


class HopeForCausalLM(HopePreTrainedModel, GenerationMixin):
    """HOPE with a language-modelling head; `generate()` carries the memories in a `HopeCache`."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: HopeConfig) -> None:
        super().__init__(config)
        self.model = HopeModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets (shifted inside the loss); -100 is ignored. Extra keyword arguments such as
            `num_items_in_batch` go to the loss function.
        """
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
        )


__all__ = ["HopeForCausalLM", "HopeModel", "HopePreTrainedModel"]
