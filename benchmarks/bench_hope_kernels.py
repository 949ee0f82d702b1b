"""Benchmark the HOPE memory's Triton kernels against the torch chunk path, side by side on one GPU.

Measured in one run (CUDA events, median of `--repeats` after warm-up):
1. the chunk read alone (`chunk_read` vs `read_updated`) at the shapes of the main memory's two reads, forward and
   forward+backward, with its operation and byte counts and the achieved fraction of the device's peak;
2. a HOPE layer (the self-modifying Titans mixer alone, and the whole block with its CMS) at width 1024 (8 heads
   of 128, chunk 64), forward and forward+backward, `memory_implementation="triton"` vs `"chunk"`;
3. when flash-linear-attention imports (`pip install flash-linear-attention`), its gated delta rule chunk kernel
   at the same batch, length, heads and head width, against the HOPE mixer with kernels.
Each row that runs out of memory is reported as OOM and the table goes on. Needs a CUDA device and the `triton`
extra. Float32 products use TF32 on both paths unless `--no-tf32`.

Run: `python benchmarks/bench_hope_kernels.py` (a minute or two on an H100) or `--quick`.
"""

import argparse
from collections.abc import Callable
from functools import partial

import torch
from cuda_timing import cuda_seconds  # sibling module: benchmarks run as scripts
from transformers import AutoModelForCausalLM

from hf_hope import HopeConfig
from hf_hope.modeling.memory_chunk_kernels import chunk_read
from hf_hope.modeling.memory_dual_form import BetaTerms, SegmentCoefficients, read_updated
from hf_hope.modeling.memory_triton_common import triton_available

DEVICE = "cuda"
HIDDEN_SIZE, NUM_HEADS, HEAD_DIM, CHUNK_SIZE, EXPANSION = 1024, 8, 128, 64, 2
LAYER_TARGET_LENGTH, LAYER_TARGET_SPEEDUP = 8192, 4.0

# Dense peaks per device family: (bfloat16 tensor, TF32 tensor, float32 FMA) FLOP/s and HBM bytes/s (SXM parts).
PEAKS = {
    "H200": (989e12, 494e12, 67e12, 4.8e12),
    "H100": (989e12, 494e12, 67e12, 3.35e12),
    "A100": (312e12, 156e12, 19.5e12, 2.04e12),
}


def device_peaks() -> tuple[float, float, float, float] | None:
    name = torch.cuda.get_device_name()
    return next((peaks for family, peaks in PEAKS.items() if family in name), None)


def guarded(run: Callable[[], str]) -> str:
    """A table cell: the measurement, or OOM (the cache is emptied so that the next row starts clean)."""
    try:
        return run()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM"


def read_counts(tokens: int, din: int, dout: int, dtype: torch.dtype) -> tuple[float, float]:
    """Forward flops and HBM bytes of one chunk read over `tokens` tokens of one head (with momentum).

    Per chunk of L: `Y W0^T`, `Y S0^T` (2 L in out each), `Y X^T` (L^2 in), `P E` (L^2 out), times 2 for
    multiply-add; bytes: Y, X, E, out in `dtype`, W0 and S0 per chunk, the L x L coefficients in float32.
    """
    chunks, length = tokens // CHUNK_SIZE, CHUNK_SIZE
    flops = chunks * 2 * (2 * length * din * dout + length * length * (din + dout))
    size = torch.finfo(dtype).bits // 8
    bytes_moved = chunks * (length * (2 * din + 2 * dout) * size + 2 * din * dout * size + length * length * 4)
    return flops, bytes_moved


def read_problem(tokens: int, din: int, dout: int, dtype: torch.dtype) -> dict:
    """Random inputs of the reads of all chunks of `tokens` tokens; token tensors are `[batch, time, heads, dim]`."""
    chunks = tokens // CHUNK_SIZE

    def tokens_of(width: int) -> torch.Tensor:
        flat = torch.randn(1, tokens, NUM_HEADS, width, device=DEVICE, dtype=dtype) / width**0.5
        return flat.transpose(1, 2).unflatten(2, (chunks, CHUNK_SIZE)).requires_grad_()

    def state() -> torch.Tensor:
        return (torch.randn(1, NUM_HEADS, chunks, dout, din, device=DEVICE) / din**0.5).to(dtype).requires_grad_()

    def rate(scale: float) -> torch.Tensor:
        return (scale * torch.rand(1, NUM_HEADS, chunks, CHUNK_SIZE, device=DEVICE)).to(dtype).requires_grad_()

    return {
        "tensors": (tokens_of(din), tokens_of(din), tokens_of(dout), state(), state()),
        "rates": (rate(0.05), rate(-0.1), rate(-0.5)),
        "grad": torch.randn(1, NUM_HEADS, chunks, CHUNK_SIZE, dout, device=DEVICE, dtype=dtype),
    }


def read_step(read, problem: dict, backward: bool) -> Callable[[], None]:
    read_inputs, write_inputs, errors, start, momentum = problem["tensors"]
    eta, log_alpha, log_beta = problem["rates"]

    def step() -> None:
        coefficients = SegmentCoefficients(eta, log_alpha, BetaTerms(log_beta), None)
        out = read(start, momentum, coefficients, write_inputs, errors, read_inputs)
        if backward:
            out.backward(problem["grad"])

    return step


def read_row(tokens: int, din: int, dout: int, dtype: torch.dtype, backward: bool, settings) -> str:
    """Torch and kernel times of one read, the kernel's achieved flop rate and bandwidth and their share of peak."""
    problem = read_problem(tokens, din, dout, dtype)
    seconds = {
        label: cuda_seconds(read_step(read, problem, backward), settings.warmup, settings.repeats)
        for label, read in (("torch", read_updated), ("kernel", chunk_read))
    }
    multiplier = 3 if backward else 1
    flops, bytes_moved = read_counts(tokens, din, dout, dtype)
    rate = multiplier * NUM_HEADS * flops / seconds["kernel"]
    bandwidth = multiplier * NUM_HEADS * bytes_moved / seconds["kernel"]
    peaks = device_peaks()
    fraction = hbm = "n/a"
    if peaks is not None:
        compute_peak = peaks[0] if dtype == torch.bfloat16 else peaks[1 if settings.tf32 else 2]
        fraction, hbm = f"{rate / compute_peak:.1%}", f"{bandwidth / peaks[3]:.1%}"
    return (
        f"{seconds['torch'] * 1e3:>9.3f} {seconds['kernel'] * 1e3:>9.3f} {seconds['torch'] / seconds['kernel']:>8.2f}x "
        f"{rate / 1e12:>8.1f} {fraction:>8} {bandwidth / 1e9:>7.0f} {hbm:>7}"
    )


def bench_read(tokens: int, dtype: torch.dtype, settings: argparse.Namespace) -> None:
    print(f"1. Chunk read, batch 1, {NUM_HEADS} heads, {tokens} tokens, chunk {CHUNK_SIZE}, {dtype}")
    header = f"{'read':>10} {'pass':>8} {'torch ms':>9} {'kernel ms':>9} {'speed-up':>9} {'TFLOP/s':>8} {'of peak':>8}"
    print(f"{header} {'GB/s':>7} {'of HBM':>7}")
    shapes = (("W2 (k->h)", HEAD_DIM, EXPANSION * HEAD_DIM), ("W1 (h->o)", EXPANSION * HEAD_DIM, HEAD_DIM))
    for name, din, dout in shapes:
        for backward in (False, True):
            row = guarded(partial(read_row, tokens, din, dout, dtype, backward, settings))
            print(f"{name:>10} {'fwd+bwd' if backward else 'fwd':>8} {row}")
    print("  counts: fwd flops 2 (2 L in out + L^2 (in + out)) per chunk (momentum included), fwd+bwd counted as")
    print("  3x fwd; bytes: token tensors, per-chunk states and float32 L x L coefficients, each moved once.")


def build_layer(length: int, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.Tensor]:
    config = HopeConfig(
        vocab_size=1000,
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=1,
        num_heads=NUM_HEADS,
        chunk_size=CHUNK_SIZE,
        memory_expansion=EXPANSION,
        cms_levels=[{"intermediate_size": 4 * HIDDEN_SIZE, "period": 1}],
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(DEVICE, dtype)
    hidden = torch.randn(1, length, HIDDEN_SIZE, device=DEVICE, dtype=dtype)
    return model.model.layers[0], hidden


def layer_step(layer: torch.nn.Module, hidden: torch.Tensor, part: str, implementation: str, backward: bool):
    def step() -> None:
        leaf = hidden.detach().requires_grad_(backward)
        if part == "mixer":
            out = layer.mixer(leaf, implementation=implementation)[0]
        else:
            layer.memory_implementation = implementation
            out = layer(leaf)
        if backward:
            out.float().square().mean().backward()
            layer.zero_grad(set_to_none=True)

    return step


def layer_row(layer, hidden, part: str, backward: bool, settings) -> tuple[str, float]:
    with torch.set_grad_enabled(backward):
        seconds = {
            implementation: cuda_seconds(
                layer_step(layer, hidden, part, implementation, backward), settings.warmup, settings.repeats
            )
            for implementation in ("chunk", "triton")
        }
    speedup = seconds["chunk"] / seconds["triton"]
    return f"{seconds['chunk'] * 1e3:>9.2f} {seconds['triton'] * 1e3:>10.2f} {speedup:>8.2f}x", speedup


def bench_layer(lengths: list[int], dtype: torch.dtype, settings: argparse.Namespace) -> dict[int, float]:
    """Print mixer and block times per length and pass; return the block's fwd+bwd speed-up per length."""
    print(f"2. HOPE layer, width {HIDDEN_SIZE} ({NUM_HEADS} heads of {HEAD_DIM}), chunk {CHUNK_SIZE}, batch 1, {dtype}")
    print(f"{'tokens':>7} {'part':>6} {'pass':>8} {'chunk ms':>9} {'triton ms':>10} {'speed-up':>9}")
    speedups = {}
    for length in lengths:
        layer, hidden = build_layer(length, dtype)
        for part in ("mixer", "block"):
            for backward in (False, True):
                try:
                    row, speedup = layer_row(layer, hidden, part, backward, settings)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    row, speedup = "OOM", None
                if part == "block" and backward and speedup is not None:
                    speedups[length] = speedup
                print(f"{length:>7} {part:>6} {'fwd+bwd' if backward else 'fwd':>8} {row}")
        del layer, hidden
        torch.cuda.empty_cache()
    return speedups


def fla_step(chunk_gated_delta_rule, length: int, dtype: torch.dtype, backward: bool) -> Callable[[], None]:
    shape = (1, length, NUM_HEADS, HEAD_DIM)
    q, k, v = (torch.nn.functional.normalize(torch.randn(shape, device=DEVICE), dim=-1).to(dtype) for _ in range(3))
    g = torch.nn.functional.logsigmoid(torch.randn(1, length, NUM_HEADS, device=DEVICE))
    beta = torch.rand(1, length, NUM_HEADS, device=DEVICE).to(dtype)
    leaves = [tensor.requires_grad_(backward) for tensor in (q, k, v, g, beta)]

    def step() -> None:
        out, _ = chunk_gated_delta_rule(*leaves[:3], g=leaves[3], beta=leaves[4], output_final_state=True)
        if backward:
            out.float().square().mean().backward()

    return step


def fla_row(chunk_gated_delta_rule, layer, hidden, backward: bool, settings) -> str:
    with torch.set_grad_enabled(backward):
        step = fla_step(chunk_gated_delta_rule, hidden.shape[1], hidden.dtype, backward)
        fla_seconds = cuda_seconds(step, settings.warmup, settings.repeats)
        step = layer_step(layer, hidden, "mixer", "triton", backward)
        hope_seconds = cuda_seconds(step, settings.warmup, settings.repeats)
    return f"{fla_seconds * 1e3:>8.2f} {hope_seconds * 1e3:>14.2f} {hope_seconds / fla_seconds:>13.2f}x"


def bench_fla(length: int, dtype: torch.dtype, settings: argparse.Namespace) -> None:
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
    except ImportError:
        print("3. flash-linear-attention is not installed: the gated delta rule comparison is skipped.")
        return
    print(f"3. vs fla chunk_gated_delta_rule, batch 1, {length} tokens, {NUM_HEADS} heads of {HEAD_DIM}, {dtype}")
    layer, hidden = build_layer(length, dtype)
    print(f"{'pass':>8} {'fla ms':>8} {'HOPE mixer ms':>14} {'HOPE/fla time':>14}")
    for backward in (False, True):
        row = guarded(partial(fla_row, chunk_gated_delta_rule, layer, hidden, backward, settings))
        print(f"{'fwd+bwd' if backward else 'fwd':>8} {row}")
    print("  fla's time is its memory kernel alone; HOPE's includes its projections, conv and generators.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short lengths, few repetitions (a smoke test)")
    parser.add_argument("--no-tf32", dest="tf32", action="store_false", help="IEEE float32 products on both paths")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    settings = parser.parse_args()
    if not torch.cuda.is_available() or not triton_available():
        raise SystemExit("This benchmark needs a CUDA device and Triton (pip install 'hf-hope[triton]').")
    torch.backends.cuda.matmul.allow_tf32 = settings.tf32
    torch.backends.cudnn.allow_tf32 = settings.tf32
    lengths = [1024, 2048] if settings.quick else [2048, 8192]
    if settings.quick:
        settings.repeats, settings.warmup = 3, 1
    print(f"{torch.cuda.get_device_name()}, TF32 {'on' if settings.tf32 else 'off'}, peaks: {device_peaks()}\n")
    for dtype in (torch.float32, torch.bfloat16):
        bench_read(lengths[-1], dtype, settings)
        print()
    speedups = bench_layer(lengths, torch.bfloat16, settings)
    print()
    bench_fla(lengths[-1], torch.bfloat16, settings)
    print()
    print("Target")
    speedup = speedups.get(LAYER_TARGET_LENGTH)
    if speedup is None:
        print(f"  layer fwd+bwd, triton vs chunk at {LAYER_TARGET_LENGTH} >= {LAYER_TARGET_SPEEDUP}x: not measured")
    else:
        status = "met" if speedup >= LAYER_TARGET_SPEEDUP else "MISSED"
        target = f"layer fwd+bwd, triton vs chunk at {LAYER_TARGET_LENGTH} >= {LAYER_TARGET_SPEEDUP}x"
        print(f"  {target}: {speedup:.2f}x [{status}]")


if __name__ == "__main__":
    main()
