"""Self-modifying Titans: the sequence mixer of the HOPE block.

Queries are a plain projection. Keys, values, the inner learning rate `eta_t` and the retention `alpha_t` come
from per-head linear *generator memories* whose initial states are trained parameters and which learn in context
(self-modification); `self_modifying=False` keeps them static (plain Titans). A short causal depthwise convolution
and SiLU act on q, k, v; q, k and v are L2-normalised (unit values keep the in-context dynamics of the
self-generated targets `G v` contracting: a long run of one repeated token would otherwise grow them without
bound). The main memory is a per-head residual MLP `M(z) = z + W1 silu(W2 z)`. Every memory learns in context
by DGD with momentum and retention on `||M(k_t) - vhat_t||^2`. The output goes through a per-head RMSNorm and a
sigmoid gate before `o_proj`.

Inside HOPE the mixer is built from the model's `HopeConfig`; `SelfModifyingTitans.from_kwargs(hidden_size=...,
num_heads=..., chunk_size=...)` builds and initialises one as a stand-alone layer.
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from .configuration_hope import HopeConfig
from .memory_carry_kernels import carry_state
from .memory_chunk import chunk_forward
from .memory_chunk_kernels import chunk_read
from .memory_decode import decode_forward
from .memory_kernel_probe import kernels_run
from .memory_recurrent import recurrent_forward
from .memory_state import MemoryForward, MemoryState, Rates
from .memory_triton_common import KERNEL_DTYPES, kernels_usable, triton_available
from .normalization import HopeRMSNorm

MEMORY_FORWARDS: dict[str, MemoryForward] = {"chunk": chunk_forward, "recurrent": recurrent_forward}
ALPHA_BIAS_INIT = 6.0  # retention sigmoid(6) ~ 0.9975 per token at initialisation


def memory_forward_for(implementation: str, queries_in: torch.Tensor) -> MemoryForward:
    """The memory forward that `implementation` selects for these inputs (`[batch, heads, length, head_dim]`).

    `"auto"` takes the Triton kernels on CUDA when Triton is installed and the memories compute in float32 or
    bfloat16, the torch chunk path otherwise (and where the kernels failed their first run: `kernels_run`);
    `"triton"` insists on the kernels. With the kernels, one token
    without autograd (decoding) takes the fused decoding step, anything else the chunk path with the kernels'
    reads and chunk-end state carries.
    """
    if implementation in MEMORY_FORWARDS:
        return MEMORY_FORWARDS[implementation]
    device, dtype = queries_in.device, queries_in.dtype
    if implementation == "auto":
        if not (triton_available() and _auto_takes_kernels(device) and dtype in KERNEL_DTYPES):
            return chunk_forward
    elif implementation != "triton":
        raise ValueError(
            f"memory_implementation={implementation!r} is unknown: use 'auto', 'triton', 'chunk' or 'recurrent'."
        )
    elif not kernels_usable(device) or dtype not in KERNEL_DTYPES:
        raise RuntimeError(
            "memory_implementation='triton' needs Triton (pip install 'hf-hope[triton]'), a CUDA device (or "
            f"TRITON_INTERPRET=1 on CPU) and memories in float32 or bfloat16; got {dtype} on {device}"
            f"{'' if triton_available() else ' without Triton'}. Use 'auto' or 'chunk' instead."
        )
    if queries_in.shape[2] == 1 and not torch.is_grad_enabled():
        return decode_forward
    return partial(chunk_forward, read=chunk_read, carry=carry_state)


def _auto_takes_kernels(device: torch.device) -> bool:
    """Where "auto" takes the kernels: on CUDA (on CPU they would run in Triton's slow interpreter)."""
    return device.type == "cuda"


class SelfModifyingTitans(nn.Module):
    """Self-modifying Titans mixer over `[batch, length, hidden_size]` inputs with a carried `MemoryState`.

    It is the `MemoryMixer` of the memory ops. `SelfModifyingTitans(config)` leaves the parameters to the model's
    initialisation; `from_kwargs` initialises them itself.
    """

    def __init__(self, config: HopeConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.chunk_size, self.conv_size = config.chunk_size, config.conv_size
        self.recompute_chunks = config.memory_recompute_chunks
        self.memory_lr_max = config.memory_lr_max
        self.self_modifying = config.self_modifying
        self.self_generated_values = config.self_generated_values
        heads, head_dim = config.num_heads, config.head_dim
        inner = heads * head_dim
        memory_width = config.memory_expansion * head_dim

        self.q_proj = nn.Linear(config.hidden_size, inner, bias=False)
        self.in_proj = nn.Linear(config.hidden_size, inner, bias=False)
        self.g_proj = nn.Linear(config.hidden_size, inner, bias=False)
        self.o_proj = nn.Linear(inner, config.hidden_size, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(heads, 3 * head_dim, config.conv_size))
        # Initial states of the in-context memories: generators of (k, v) and of (eta, alpha) logits, main memory.
        self.generator_kv = nn.Parameter(torch.empty(heads, 2 * head_dim, head_dim))
        self.generator_rates = nn.Parameter(torch.empty(heads, 2, head_dim))
        self.memory_w1 = nn.Parameter(torch.empty(heads, head_dim, memory_width))
        self.memory_w2 = nn.Parameter(torch.empty(heads, memory_width, head_dim))
        self.eta_bias = nn.Parameter(torch.empty(heads))
        self.alpha_bias = nn.Parameter(torch.empty(heads))
        self.momentum_logit = nn.Parameter(torch.empty(heads))
        self.o_norm = HopeRMSNorm(head_dim, eps=config.rms_norm_eps)

    @classmethod
    def from_kwargs(
        cls,
        *,
        hidden_size: int = 512,
        num_heads: int = 8,
        head_dim: int | None = None,
        chunk_size: int = 64,
        conv_size: int = 4,
        memory_expansion: int = 2,
        memory_lr_max: float | None = None,
        self_modifying: bool = True,
        self_generated_values: bool = True,
        memory_recompute_chunks: int | None = None,
        rms_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
    ) -> "SelfModifyingTitans":
        """A mixer from keyword arguments, initialised like HOPE's, for use as a layer outside HOPE.

        The arguments, their defaults and their validation are those of `HopeConfig` (`head_dim` defaults to
        `hidden_size // num_heads`, `memory_lr_max` to `min(0.1, 0.25 / chunk_size)`): the mixer equals the one
        built from the `HopeConfig` with the same values.
        """
        config = HopeConfig(
            hidden_size=hidden_size,
            num_heads=num_heads,
            head_dim=head_dim,
            chunk_size=chunk_size,
            conv_size=conv_size,
            memory_expansion=memory_expansion,
            memory_lr_max=memory_lr_max,
            self_modifying=self_modifying,
            self_generated_values=self_generated_values,
            memory_recompute_chunks=memory_recompute_chunks,
            rms_norm_eps=rms_norm_eps,
            initializer_range=initializer_range,
        )
        mixer = cls(config)
        for projection in (mixer.q_proj, mixer.in_proj, mixer.g_proj, mixer.o_proj):
            init.normal_(projection.weight, std=initializer_range)
        mixer.reset_memory_parameters(initializer_range)
        return mixer

    def reset_memory_parameters(self, initializer_range: float) -> None:
        """HOPE's initialisation of the conv and of the memories' initial states and rate parameters.

        The projections are plain `nn.Linear`s (normal with std `initializer_range` in HOPE). Loaded weights
        (flagged by transformers) are left alone.
        """
        head_std = self.head_dim**-0.5
        conv_bound = self.conv_size**-0.5
        init.uniform_(self.conv_weight, -conv_bound, conv_bound)
        init.normal_(self.generator_kv, std=head_std)
        init.zeros_(self.generator_rates)
        init.normal_(self.memory_w1, std=initializer_range)
        init.normal_(self.memory_w2, std=head_std)
        init.zeros_(self.eta_bias)
        init.constant_(self.alpha_bias, ALPHA_BIAS_INIT)
        init.zeros_(self.momentum_logit)

    def initial_state(self, batch_size: int) -> MemoryState:
        """The state before the first token: the trained initial memories, zero momentum, empty conv window."""
        generator = torch.cat([self.generator_kv, self.generator_rates], dim=1)
        weights = {
            name: value.unsqueeze(0).expand(batch_size, *value.shape)
            for name, value in (("generator", generator), ("w1", self.memory_w1), ("w2", self.memory_w2))
        }
        return MemoryState(weights=weights, chunk_start=dict(weights))

    def queries(
        self, queries_in: torch.Tensor, mask: torch.Tensor | None, tail: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised queries from the static query projections, and the new conv tail of their channels."""
        convolved, tail = self._convolve(queries_in, self.conv_weight[:, : self.head_dim], mask, tail)
        return F.normalize(convolved, dim=-1), tail

    def keys_values(
        self, generated: torch.Tensor, mask: torch.Tensor | None, tail: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L2-normalised keys and values from the generators' outputs, and the new conv tail of their channels."""
        features = generated[..., : 2 * self.head_dim]
        convolved, tail = self._convolve(features, self.conv_weight[:, self.head_dim :], mask, tail)
        keys, values = convolved.split(self.head_dim, dim=-1)
        return F.normalize(keys, dim=-1), F.normalize(values, dim=-1), tail

    def _convolve(
        self, features: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor | None, tail: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal depthwise conv + SiLU over `[batch, heads, length, channels]`, continuing from `tail`.

        Padded positions (`mask` `[batch, 1, length]` is 0) enter the window as zeros, exactly like the empty
        window before the first token. Returns the activations and the new tail (the last `conv_size - 1` inputs).
        """
        weight = weight.to(features.dtype)
        if mask is not None:
            features = features * mask[..., None]
        batch, heads, length, channels = features.shape
        if tail is None:
            tail = features.new_zeros(batch, heads, self.conv_size - 1, channels)
        window = torch.cat([tail, features], dim=2)
        convolved = weight[None, :, None, :, 0] * window[:, :, :length]
        for offset in range(1, self.conv_size):
            convolved = convolved + weight[None, :, None, :, offset] * window[:, :, offset : offset + length]
        return F.silu(convolved), window[:, :, length:].clone()

    def rates(self, generated: torch.Tensor, mask: torch.Tensor | None) -> Rates:
        """Per-token `eta`, `log alpha`, `log beta` and write flag `[batch, heads, length]`; padding is a no-op.

        Without a mask the write flag is None and `log beta` (a per-head constant) has batch dimension 1.
        """
        eta_logit = generated[..., 2 * self.head_dim] + self.eta_bias[:, None]
        alpha_logit = generated[..., 2 * self.head_dim + 1] + self.alpha_bias[:, None]
        eta = self.memory_lr_max * torch.sigmoid(eta_logit)
        log_alpha = F.logsigmoid(alpha_logit)
        log_beta = F.logsigmoid(self.momentum_logit.to(generated.dtype))[None, :, None].expand(1, -1, eta.shape[-1])
        if mask is None:
            return eta, log_alpha, log_beta, None
        return eta * mask, log_alpha * mask, log_beta * mask, mask.expand_as(eta)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: MemoryState | None = None,
        implementation: str = "auto",
    ) -> tuple[torch.Tensor, MemoryState]:
        """Mix `[batch, length, hidden]` inputs; `attention_mask` is `[batch, length]` with 0 on padding.

        The memories are computed in at least float32 (bfloat16 and float16 models included), and so is the
        returned state.
        """
        batch, length, _ = hidden_states.shape
        if length == 0:
            raise ValueError("SelfModifyingTitans received an empty sequence (length 0).")
        compute_dtype = torch.promote_types(hidden_states.dtype, torch.float32)
        state = self.initial_state(batch) if state is None else state
        state = state.map_tensors(lambda tensor: tensor.to(compute_dtype))
        heads_view = (batch, length, self.num_heads, self.head_dim)
        queries_in = self.q_proj(hidden_states).view(heads_view).transpose(1, 2).to(compute_dtype)
        generator_in = self.in_proj(hidden_states).view(heads_view).transpose(1, 2).to(compute_dtype)
        gate = self.g_proj(hidden_states)
        memory_forward = memory_forward_for(implementation, queries_in)
        if implementation == "auto" and memory_forward is not chunk_forward:
            kernels = partial(chunk_forward, read=chunk_read, carry=carry_state)
            if not kernels_run(self, kernels, decode_forward, queries_in):
                memory_forward = chunk_forward
        read, new_state = memory_forward(self, queries_in, generator_in, attention_mask, state)
        read = self.o_norm(read).to(hidden_states.dtype).transpose(1, 2).reshape(batch, length, -1)
        return self.o_proj(read * torch.sigmoid(gate)), new_state
