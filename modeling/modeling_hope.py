"""HOPE as a `transformers` model: `HopeModel` and `HopeForCausalLM`.

Each block is `h = x + SelfModifyingTitans(RMSNorm(x))` followed by a Continuum Memory System whose levels
normalise their own inputs (`z <- z + MLP_l(norm(z))`). The mixer's memories learn in context; their states live in
a `HopeCache` of constant size.
"""

import os

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel, slice_logits_to_keep
from transformers.utils import can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .cache_hope import HopeCache
from .checkpoint_errors import weights_named_on_error
from .cms import ContinuumMemory
from .configuration_hope import HopeConfig
from .folder_swap import recover_swapped_folder, staged_save_pretrained
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
        """`PreTrainedModel.save_pretrained`, recording all three Auto classes in `auto_map`, written in stages.

        The modeling files are copied next to the weights, so `trust_remote_code=True` loads the checkpoint where
        hf_hope is not installed. The save goes into a hidden sibling folder that then replaces `save_directory`
        (keeping its other files), so a save killed part-way leaves the previous one (`folder_swap`).
        """
        module = HopeModel.__module__.rsplit(".", 1)[-1]
        self.config.auto_map = {
            "AutoConfig": f"{HopeConfig.__module__.rsplit('.', 1)[-1]}.HopeConfig",
            "AutoModel": f"{module}.HopeModel",
            "AutoModelForCausalLM": f"{module}.HopeForCausalLM",
        }
        return staged_save_pretrained(super().save_pretrained, save_directory, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, but a checkpoint whose weights do not match the config is an error.

        A missing, unexpected or mis-shaped tensor of the backbone would otherwise leave part of the model randomly
        initialised or silently drop trained weights. The head follows transformers: a checkpoint without it (a
        `HopeModel` loaded as `HopeForCausalLM`) gets a tied head, or a newly initialised one that transformers'
        load report lists as MISSING. A damaged weights file is an error that names the folder.
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        ignore_mismatched_sizes = kwargs.pop("ignore_mismatched_sizes", False)
        source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        if isinstance(source, (str, os.PathLike)):
            recover_swapped_folder(source)  # a save killed between its two renames left the previous one aside
        with weights_named_on_error(source):
            model, loading_info = super().from_pretrained(
                *args, output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
            )
        problems = _loading_problems(model, loading_info, ignore_mismatched_sizes)
        if problems:
            listed = "; ".join(f"{kind}: {sorted(map(str, names))[:20]}" for kind, names in problems.items())
            raise ValueError(
                f"The checkpoint does not match the {type(model).__name__} built from its config ({listed}). "
                "Check that config.json belongs to these weights (layers, widths, heads, cms_levels)."
            )
        return (model, loading_info) if output_loading_info else model


def _loading_problems(model: PreTrainedModel, loading_info: dict, ignore_mismatched_sizes: bool) -> dict[str, set]:
    """The kinds of key that make a load an error, with their keys: every mismatch of the backbone and memories.

    Left out: a head's missing weights (transformers initialises them and reports it), a base model's unused
    `lm_head.*` from a CausalLM checkpoint, and mis-shaped tensors when `ignore_mismatched_sizes=True`.
    """
    backbone = f"{model.base_model_prefix}." if model.base_model is not model else ""
    return {
        kind: names
        for kind, names in {
            "missing_keys": {key for key in loading_info["missing_keys"] if key.startswith(backbone)},
            "unexpected_keys": {key for key in loading_info["unexpected_keys"] if key.split(".")[0] != "lm_head"},
            "mismatched_keys": set() if ignore_mismatched_sizes else loading_info["mismatched_keys"],
        }.items()
        if names
    }


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

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
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
            _check_input_ids(input_ids)
            inputs_embeds = self.embed_tokens(input_ids)
        _check_inputs_embeds(inputs_embeds, self.config.hidden_size)
        _check_cache(cache, inputs_embeds.shape[0])
        if use_cache and cache is None:
            cache = HopeCache(config=self.config)
        memory_mask = _memory_mask(attention_mask, inputs_embeds.shape[:2])

        hidden_states = inputs_embeds
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(hidden_states, attention_mask=memory_mask, cache=cache)
        return BaseModelOutputWithPast(
            last_hidden_state=self.norm(hidden_states),
            cache=cache if use_cache else None,
        )


def _check_input_ids(input_ids: torch.Tensor) -> None:
    """A ValueError unless `input_ids` is `[batch, length]` (a single sequence needs its batch dimension too)."""
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must have shape (batch, length); got shape {tuple(input_ids.shape)}. Add the batch "
            "dimension of a single sequence with input_ids.unsqueeze(0)."
        )


def _check_inputs_embeds(inputs_embeds: torch.Tensor, hidden_size: int) -> None:
    """A ValueError unless the embeddings are a non-empty `[batch, length, hidden_size]` tensor."""
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != hidden_size:
        raise ValueError(
            f"inputs_embeds must have shape (batch, length, hidden_size={hidden_size}); got shape "
            f"{tuple(inputs_embeds.shape)}. Embed the tokens with model.get_input_embeddings() of this model."
        )
    if inputs_embeds.shape[0] == 0 or inputs_embeds.shape[1] == 0:
        raise ValueError(
            f"The input is empty (shape (batch, length) = {tuple(inputs_embeds.shape[:2])}): give at least one "
            "sequence of at least one token."
        )


def _check_cache(cache: Cache | None, batch_size: int) -> None:
    """A TypeError for a cache that is not a `HopeCache`, a ValueError for one that holds another batch size."""
    if cache is None:
        return
    if not isinstance(cache, HopeCache):
        raise TypeError(
            f"HOPE keeps memory states, not keys and values: cache must be a HopeCache, got "
            f"{type(cache).__name__}. Leave it as None to let the model create one."
        )
    if cache.batch_size not in (-1, batch_size):
        raise ValueError(
            f"The HopeCache holds memories for batch size {cache.batch_size} but the input has batch size "
            f"{batch_size}: pass the cache returned for this batch (in the same order), or a new HopeCache."
        )


def _memory_mask(attention_mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """The write mask of the current tokens, for an input of `shape` `(batch, length)`; None when all are real."""
    if attention_mask is None:
        return None
    batch, length = shape
    if attention_mask.dim() != 2:
        raise ValueError(
            f"HOPE takes a 2D attention_mask of shape (batch, length) with 1 for tokens and 0 for padding; got "
            f"shape {tuple(attention_mask.shape)}."
        )
    if attention_mask.shape[0] != batch:
        raise ValueError(
            f"attention_mask has batch size {attention_mask.shape[0]} but the input has batch size {batch}: give "
            "one mask row per sequence."
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

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
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
        # A dict whatever `config.return_dict` says (it is shared with the backbone); the tuple is made on return.
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
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

    def _expand_inputs_for_generation(
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: torch.LongTensor | None = None,
        **model_kwargs,
    ) -> tuple[torch.LongTensor, dict]:
        """`GenerationMixin`'s expansion for beams and `num_return_sequences`, extended to a given `HopeCache`.

        transformers repeats only tensors, so `generate(ids, cache=returned_cache, num_beams=2)` would otherwise
        continue every beam from a cache that holds one state per prompt.
        """
        cache = model_kwargs.get("cache")
        prompts = input_ids.shape[0] if input_ids is not None else None
        if expand_size > 1 and isinstance(cache, HopeCache) and cache.batch_size == prompts:
            cache.batch_repeat_interleave(expand_size)
        return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)


__all__ = ["HopeForCausalLM", "HopeModel", "HopePreTrainedModel"]
