"""Benchmark HOPE against a Llama of the same shape, side by side on this CPU.

Measures, in one run:
1. forward+backward training throughput (tokens/s) of `HopeForCausalLM` vs `LlamaForCausalLM` (SDPA attention),
2. the speed-up of the chunk-parallel memory over the token-by-token reference (one mixer, no grad),
3. per-token decoding latency and cache size after a short and a long prompt, for both models,
and prints each measurement next to its target. Timings are medians of interleaved repetitions after warm-up.
Run it on an otherwise idle machine: HOPE's many small kernels slow down far more than Llama's under CPU contention.

Run: `python benchmarks/bench_hope_vs_llama.py` (a few minutes on 2 cores) or with `--quick` (a smoke test).
"""

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from transformers import AutoModelForCausalLM, Cache, LlamaConfig, PreTrainedModel

from hf_hope import HopeCache, HopeConfig

VOCAB_SIZE = 1000
HIDDEN_SIZE = 256
NUM_LAYERS = 4
NUM_HEADS = 4
INTERMEDIATE_SIZE = 688

TRAINING_TARGETS = {2048: 0.5, 8192: 1.0}  # minimum HOPE/Llama training throughput at these lengths
MEMORY_TARGET_LEN, MEMORY_TARGET_SPEEDUP = 2048, 10.0
DECODE_TARGET_POSITIONS, DECODE_TARGET_SLOWDOWN = (128, 4096), 1.25


@dataclass
class Settings:
    chunk_size: int
    seq_lens: list[int]
    memory_len: int
    decode_positions: tuple[int, int]
    decode_steps: int
    warmup: int
    repeats: int


FULL = Settings(64, [512, 2048, 8192], MEMORY_TARGET_LEN, DECODE_TARGET_POSITIONS, decode_steps=32, warmup=1, repeats=5)
QUICK = Settings(64, [128, 256], 256, (32, 256), decode_steps=8, warmup=1, repeats=2)


def build_models(max_positions: int, chunk_size: int) -> tuple[PreTrainedModel, PreTrainedModel]:
    """A HOPE model and a Llama of the same width, depth, heads and vocabulary (one CMS level vs one MLP)."""
    torch.manual_seed(0)
    hope_config = HopeConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_heads=NUM_HEADS,
        chunk_size=chunk_size,
        cms_levels=[{"intermediate_size": INTERMEDIATE_SIZE, "period": 1}],
    )
    llama_config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        max_position_embeddings=max_positions,
    )
    hope = AutoModelForCausalLM.from_config(hope_config)
    llama = AutoModelForCausalLM.from_config(llama_config, attn_implementation="sdpa")
    return hope, llama


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def interleaved_medians(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds of each step, running the steps in turn so that machine noise hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for repetition in range(warmup + repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if repetition >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) for name, samples in times.items()}


def training_step(model: PreTrainedModel, input_ids: torch.Tensor) -> Callable[[], None]:
    """One forward+backward pass of the language-modelling loss, gradients dropped afterwards."""

    def step() -> None:
        model(input_ids, labels=input_ids, use_cache=False).loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def bench_training(hope: PreTrainedModel, llama: PreTrainedModel, settings: Settings) -> dict[int, float]:
    """Print training tokens/s of both models per length; return the HOPE/Llama ratio per length."""
    hope.train()
    llama.train()
    print("1. Training throughput, forward+backward, batch 1")
    print(f"{'tokens':>8} {'HOPE tok/s':>12} {'Llama tok/s':>12} {'HOPE/Llama':>11}")
    ratios = {}
    for length in settings.seq_lens:
        input_ids = torch.randint(0, VOCAB_SIZE, (1, length))
        steps = {"hope": training_step(hope, input_ids), "llama": training_step(llama, input_ids)}
        seconds = interleaved_medians(steps, settings.warmup, settings.repeats)
        hope_rate, llama_rate = length / seconds["hope"], length / seconds["llama"]
        ratios[length] = hope_rate / llama_rate
        print(f"{length:>8} {hope_rate:>12.0f} {llama_rate:>12.0f} {ratios[length]:>10.2f}x")
    return ratios


@torch.no_grad()
def bench_memory_paths(hope: PreTrainedModel, settings: Settings) -> float:
    """Print the first mixer's forward time with the chunk-parallel and the recurrent memory; return the speed-up."""
    hope.eval()
    mixer = hope.model.layers[0].mixer
    input_ids = torch.randint(0, VOCAB_SIZE, (1, settings.memory_len))
    hidden = hope.model.layers[0].input_layernorm(hope.model.embed_tokens(input_ids))
    outputs = {}

    def forward(implementation: str) -> Callable[[], None]:
        def step() -> None:
            outputs[implementation] = mixer(hidden, implementation=implementation)[0]

        return step

    seconds = interleaved_medians(
        {name: forward(name) for name in ("chunk", "recurrent")}, settings.warmup, settings.repeats
    )
    speedup = seconds["recurrent"] / seconds["chunk"]
    difference = (outputs["chunk"] - outputs["recurrent"]).abs().max() / outputs["recurrent"].abs().max()
    print(f"2. Mixer memory, one layer, {settings.memory_len} tokens, batch 1, no grad")
    print(f"{'chunk-parallel':>16} {seconds['chunk'] * 1e3:>10.1f} ms")
    print(f"{'token-by-token':>16} {seconds['recurrent'] * 1e3:>10.1f} ms")
    print(f"{'speed-up':>16} {speedup:>10.1f}x")
    print(f"{'max rel. diff':>16} {difference.item():>10.2e}  (max |chunk - recurrent| / max |recurrent|)")
    return speedup


def cache_bytes(cache: Cache) -> int:
    """Bytes of a `HopeCache`'s memory states or of a `DynamicCache`'s keys and values."""
    if isinstance(cache, HopeCache):
        return cache.num_bytes()
    tensors = [tensor for layer in cache.layers for tensor in (layer.keys, layer.values)]
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def decoding_step(model: PreTrainedModel, prompt: torch.Tensor) -> tuple[Callable[[], None], int]:
    """Prefill `prompt`; return a greedy one-token decoding step on the cache and the cache bytes after prefill."""
    output = model(prompt, use_cache=True)
    cache = output.cache
    state = {"next": output.logits[:, -1:].argmax(-1)}

    def step() -> None:
        state["next"] = model(state["next"], cache=cache, use_cache=True).logits[:, -1:].argmax(-1)

    return step, cache_bytes(cache)


@dataclass
class DecodingResult:
    slowdown: dict[str, float]  # per model: latency at the long position / latency at the short one
    cache_bytes: dict[str, dict[int, int]]  # per model and position


@torch.no_grad()
def bench_decoding(hope: PreTrainedModel, llama: PreTrainedModel, settings: Settings) -> DecodingResult:
    """Print per-token latency and cache bytes at both positions of both models."""
    hope.eval()
    llama.eval()
    models = {"HOPE": hope, "Llama": llama}
    latency: dict[str, dict[int, float]] = {name: {} for name in models}
    size: dict[str, dict[int, int]] = {name: {} for name in models}
    for position in settings.decode_positions:
        prompt = torch.randint(0, VOCAB_SIZE, (1, position))
        steps = {}
        for name, model in models.items():
            steps[name], size[name][position] = decoding_step(model, prompt)
        seconds = interleaved_medians(steps, settings.warmup, settings.decode_steps)
        for name in models:
            latency[name][position] = seconds[name]
    short, long = settings.decode_positions
    print(f"3. Decoding, batch 1, median of {settings.decode_steps} greedy steps after a prompt of P tokens")
    print(f"{'model':>6} {'P':>6} {'ms/token':>9} {'cache bytes':>12}")
    for name in models:
        for position in (short, long):
            print(f"{name:>6} {position:>6} {latency[name][position] * 1e3:>9.2f} {size[name][position]:>12,}")
    slowdowns = {name: latency[name][long] / latency[name][short] for name in models}
    for name in models:
        growth = size[name][long] / size[name][short]
        print(f"{name:>6} latency P={long} / P={short}: {slowdowns[name]:.2f}x, cache bytes: {growth:.2f}x")
    return DecodingResult(slowdowns, size)


def verdict(met: bool, measured_at: object, target_at: object) -> str:
    if measured_at != target_at:
        return f"not checked: measured at {measured_at}, target is at {target_at}"
    return "met" if met else "MISSED"


def print_targets(
    training: dict[int, float], memory_speedup: float, decoding: DecodingResult, settings: Settings
) -> None:
    print("Targets")
    for length, minimum in TRAINING_TARGETS.items():
        if length in training:
            status = "met" if training[length] >= minimum else "MISSED"
            print(f"  HOPE/Llama training throughput at {length} >= {minimum}x: {training[length]:.2f}x  [{status}]")
        else:
            print(f"  HOPE/Llama training throughput at {length} >= {minimum}x: not measured (see --seq-lens)")
    status = verdict(memory_speedup >= MEMORY_TARGET_SPEEDUP, settings.memory_len, MEMORY_TARGET_LEN)
    print(
        f"  chunk-parallel vs token-by-token at {MEMORY_TARGET_LEN} >= {MEMORY_TARGET_SPEEDUP:.0f}x: "
        f"{memory_speedup:.1f}x  [{status}]"
    )
    short, long = DECODE_TARGET_POSITIONS
    slowdown = decoding.slowdown["HOPE"]
    status = verdict(slowdown <= DECODE_TARGET_SLOWDOWN, settings.decode_positions, DECODE_TARGET_POSITIONS)
    print(f"  HOPE latency at {long} <= {DECODE_TARGET_SLOWDOWN}x latency at {short}: {slowdown:.2f}x  [{status}]")
    sizes = [decoding.cache_bytes["HOPE"][position] for position in settings.decode_positions]
    constant = sizes[0] == sizes[1]
    print(f"  HOPE cache bytes do not grow: {sizes[0]:,} -> {sizes[1]:,}  [{'met' if constant else 'MISSED'}]")


def parse_args() -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="short lengths and few repetitions (a smoke test)")
    parser.add_argument("--seq-lens", type=int, nargs="+", help="training sequence lengths (default 512 2048 8192)")
    parser.add_argument("--chunk-size", type=int, default=64, help="HOPE's chunk_size (the config default is 64)")
    args = parser.parse_args()
    settings = replace(QUICK if args.quick else FULL, chunk_size=args.chunk_size)
    return replace(settings, seq_lens=args.seq_lens) if args.seq_lens else settings


def main() -> None:
    settings = parse_args()
    max_positions = max(*settings.seq_lens, *settings.decode_positions) + settings.warmup + settings.decode_steps
    hope, llama = build_models(max_positions, settings.chunk_size)
    print(
        f"hidden {HIDDEN_SIZE}, layers {NUM_LAYERS}, heads {NUM_HEADS}, HOPE chunk {settings.chunk_size}, "
        f"vocab {VOCAB_SIZE}, MLP/CMS width {INTERMEDIATE_SIZE}, float32, {torch.get_num_threads()} threads"
    )
    print(f"parameters: HOPE {count_parameters(hope):,}, Llama {count_parameters(llama):,}")
    print(f"warm-up {settings.warmup}, median of {settings.repeats} interleaved repetitions\n")
    training = bench_training(hope, llama, settings)
    print()
    memory_speedup = bench_memory_paths(hope, settings)
    print()
    decoding = bench_decoding(hope, llama, settings)
    print()
    print_targets(training, memory_speedup, decoding, settings)


if __name__ == "__main__":
    main()
