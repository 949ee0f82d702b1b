"""The model families the CMS adapter supports, and the one thing that differs between them: the FFN's layout.

Each family is found by its own `transformers` classes (decoder layer and FFN), never by attribute names. The
FFN layouts are few: a gated MLP (`down(act(gate(x)) * up(x))`, Llama and most others), the same with gate and
up fused in one matrix (Phi-3), and GPT-2's two `Conv1D` layers. A layout knows how to build a narrow level,
silence its output, score and copy some of its hidden units, and fold several levels into one wider FFN
(`unretrofit`).
"""

import copy
import enum
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PretrainedConfig,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)
from transformers.models.gemma.modeling_gemma import GemmaDecoderLayer, GemmaMLP
from transformers.models.gemma2.modeling_gemma2 import Gemma2DecoderLayer, Gemma2MLP
from transformers.models.gemma3.modeling_gemma3 import Gemma3DecoderLayer, Gemma3MLP
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP, GPT2Block
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaMLP
from transformers.models.mistral.modeling_mistral import MistralDecoderLayer, MistralMLP
from transformers.models.phi3.modeling_phi3 import Phi3DecoderLayer, Phi3MLP
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2MLP
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3MLP


class FFNLayout(enum.Enum):
    """How a family's FFN holds its weights."""

    GATED = "gated"  # gate_proj, up_proj, down_proj (nn.Linear)
    FUSED_GATED = "fused_gated"  # gate_up_proj (gate rows first, then up rows), down_proj (nn.Linear)
    CONV1D = "conv1d"  # c_fc, c_proj (transformers' Conv1D, weights stored [in, out])


@dataclass(frozen=True)
class Family:
    """One supported architecture: its classes, its FFN layout and the config field holding the FFN width."""

    model_type: str
    config_class: type[PretrainedConfig]
    causal_lm_class: type[nn.Module]
    decoder_layer_class: type[nn.Module]
    ffn_class: type[nn.Module]
    layout: FFNLayout
    width_field: str = "intermediate_size"

    def ffn_width(self, config: PretrainedConfig) -> int:
        width = getattr(config, self.width_field)
        return 4 * config.hidden_size if width is None else width  # GPT-2's n_inner=None means 4 * hidden

    def build_ffn(self, config: PretrainedConfig, width: int) -> nn.Module:
        """A fresh FFN of this family's own class, `width` wide."""
        if self.layout is FFNLayout.CONV1D:
            return self.ffn_class(width, config)
        narrow_config = copy.copy(config)
        setattr(narrow_config, self.width_field, width)
        return self.ffn_class(narrow_config)

    def width_of(self, ffn: nn.Module) -> int:
        """The hidden width of one FFN of this family."""
        return self._read(ffn).output.shape[1]

    @property
    def projection_names(self) -> tuple[str, ...]:
        """The attribute names of the FFN's projections, input projections first."""
        return {
            FFNLayout.GATED: ("gate_proj", "up_proj", "down_proj"),
            FFNLayout.FUSED_GATED: ("gate_up_proj", "down_proj"),
            FFNLayout.CONV1D: ("c_fc", "c_proj"),
        }[self.layout]

    def output_projection(self, ffn: nn.Module) -> nn.Module:
        return ffn.c_proj if self.layout is FFNLayout.CONV1D else ffn.down_proj

    def silence(self, ffn: nn.Module) -> None:
        """Zero the output projection (weight and bias), so the FFN's output is exactly zero."""
        projection = self.output_projection(ffn)
        with torch.no_grad():
            projection.weight.zero_()
            if projection.bias is not None:
                projection.bias.zero_()

    def is_silent(self, ffn: nn.Module) -> bool:
        projection = self.output_projection(ffn)
        return not projection.weight.any() and (projection.bias is None or not projection.bias.any())

    def fold(self, ffns: Sequence[nn.Module], weights: Sequence[float], config: PretrainedConfig) -> nn.Module:
        """One FFN computing `sum_i weights[i] * ffns[i](x)` exactly, by stacking the levels' hidden units."""
        parts = [self._read(ffn) for ffn in ffns]
        inputs = [
            (torch.cat([part.inputs[i][0] for part in parts]), _cat_or_none([part.inputs[i][1] for part in parts]))
            for i in range(len(parts[0].inputs))
        ]
        output = torch.cat([scale * part.output for scale, part in zip(weights, parts, strict=True)], dim=1)
        output_bias = None
        if parts[0].output_bias is not None:
            output_bias = sum(scale * part.output_bias for scale, part in zip(weights, parts, strict=True))
        reference = self.output_projection(ffns[0]).weight
        folded = self.build_ffn(config, output.shape[1]).to(dtype=reference.dtype, device=reference.device)
        folded.train(ffns[0].training)
        self._write(folded, _FFNWeights(inputs, output, output_bias))
        return folded

    def _read(self, ffn: nn.Module) -> "_FFNWeights":
        if self.layout is FFNLayout.CONV1D:
            return _FFNWeights([(ffn.c_fc.weight.T, ffn.c_fc.bias)], ffn.c_proj.weight.T, ffn.c_proj.bias)
        if self.layout is FFNLayout.FUSED_GATED:
            weights = ffn.gate_up_proj.weight.chunk(2)
            biases = (None, None) if ffn.gate_up_proj.bias is None else ffn.gate_up_proj.bias.chunk(2)
            inputs = list(zip(weights, biases, strict=True))
        else:
            inputs = [(ffn.gate_proj.weight, ffn.gate_proj.bias), (ffn.up_proj.weight, ffn.up_proj.bias)]
        return _FFNWeights(inputs, ffn.down_proj.weight, ffn.down_proj.bias)

    def unit_scores(self, ffn: nn.Module) -> torch.Tensor:
        """How much each hidden unit can move the output, from the weights alone: the product of the norms of its
        rows in the input projections and of its column in the output projection (`[width]`)."""
        weights = self._read(ffn)
        scores = weights.output.detach().float().norm(dim=0)
        for weight, _ in weights.inputs:
            scores = scores * weight.detach().float().norm(dim=1)
        return scores

    def unit_parameters(self, ffn: nn.Module, units: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parameters, by name, of a `len(units)`-wide FFN of this family that computes exactly the hidden
        units `units` of `ffn`: their input rows and output columns, with a zero output bias."""
        weights = self._read(ffn)
        chosen = _FFNWeights(
            [(weight[units], None if bias is None else bias[units]) for weight, bias in weights.inputs],
            weights.output[:, units],
            None if weights.output_bias is None else torch.zeros_like(weights.output_bias),
        )
        return {name: tensor.contiguous() for name, tensor in self._named(chosen).items()}

    def _named(self, weights: "_FFNWeights") -> dict[str, torch.Tensor]:
        """`weights` as the FFN's own parameters, by name (transposed for `Conv1D`, gate and up fused for Phi-3)."""
        (first, first_bias), *rest = weights.inputs
        output = {"weight": weights.output, "bias": weights.output_bias}
        if self.layout is FFNLayout.CONV1D:
            named = {
                "c_fc": {"weight": first.T, "bias": first_bias},
                "c_proj": {**output, "weight": output["weight"].T},
            }
        elif self.layout is FFNLayout.FUSED_GATED:
            ((up, up_bias),) = rest
            fused_bias = None if first_bias is None else torch.cat([first_bias, up_bias])
            named = {"gate_up_proj": {"weight": torch.cat([first, up]), "bias": fused_bias}, "down_proj": output}
        else:
            ((up, up_bias),) = rest
            named = {
                "gate_proj": {"weight": first, "bias": first_bias},
                "up_proj": {"weight": up, "bias": up_bias},
                "down_proj": output,
            }
        return {
            f"{module}.{kind}": tensor
            for module, tensors in named.items()
            for kind, tensor in tensors.items()
            if tensor is not None
        }

    @torch.no_grad()
    def _write(self, ffn: nn.Module, weights: "_FFNWeights") -> None:
        for name, tensor in self._named(weights).items():
            ffn.get_parameter(name).copy_(tensor)


@dataclass
class _FFNWeights:
    """An FFN in one canonical form: input projections `[width, hidden]` (with biases) and output `[hidden, width]`."""

    inputs: list[tuple[torch.Tensor, torch.Tensor | None]]
    output: torch.Tensor
    output_bias: torch.Tensor | None


def _cat_or_none(tensors: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
    return None if tensors[0] is None else torch.cat(tensors)


FAMILIES: dict[str, Family] = {
    family.model_type: family
    for family in (
        Family("llama", LlamaConfig, LlamaForCausalLM, LlamaDecoderLayer, LlamaMLP, FFNLayout.GATED),
        Family("qwen2", Qwen2Config, Qwen2ForCausalLM, Qwen2DecoderLayer, Qwen2MLP, FFNLayout.GATED),
        Family("qwen3", Qwen3Config, Qwen3ForCausalLM, Qwen3DecoderLayer, Qwen3MLP, FFNLayout.GATED),
        Family("mistral", MistralConfig, MistralForCausalLM, MistralDecoderLayer, MistralMLP, FFNLayout.GATED),
        Family("gemma", GemmaConfig, GemmaForCausalLM, GemmaDecoderLayer, GemmaMLP, FFNLayout.GATED),
        Family("gemma2", Gemma2Config, Gemma2ForCausalLM, Gemma2DecoderLayer, Gemma2MLP, FFNLayout.GATED),
        Family("gemma3_text", Gemma3TextConfig, Gemma3ForCausalLM, Gemma3DecoderLayer, Gemma3MLP, FFNLayout.GATED),
        Family("phi3", Phi3Config, Phi3ForCausalLM, Phi3DecoderLayer, Phi3MLP, FFNLayout.FUSED_GATED),
        Family("gpt2", GPT2Config, GPT2LMHeadModel, GPT2Block, GPT2MLP, FFNLayout.CONV1D, width_field="n_inner"),
    )
}
