"""Benchmark a ~350M HOPE model (memory kernels) against a same-size Llama (SDPA / flash attention) on one GPU.

Measured in one run, bfloat16 weights, batch 1:
1. training: forward+backward tokens/s and peak memory at 2K, 4K, 8K and 32K tokens (the HOPE memories compute
   in float32 inside, as they always do);
2. decoding: greedy tokens/s and memory after a prompt of 1K and of 32K tokens (HOPE's fused decoding step vs
   Llama's key/value cache).
Every ratio is HOPE / Llama from the same run; a row that runs out of memory is reported as OOM and the table goes
on. Llama uses `attn_implementation="flash_attention_2"` when flash-attn is installed, SDPA (whose CUDA backend
is flash attention for bfloat16) otherwise. Needs a CUDA device and the `triton` extra.

Run: `python benchmarks/bench_hope_vs_llama_long.py` (several minutes on an H100), or `--quick`.
"""

import argparse
import importlib.util
from collections.abc import Callable
from functools import partial

import torch
from cuda_timing import cuda_seconds  # sibling module: benchmarks run as scripts
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel

from hf_hope import HopeConfig
from hf_hope.modeling import memory_kernels

DEVICE = "cuda"
VOCAB_SIZE = 32000
HIDDEN_SIZE, NUM_LAYERS, NUM_HEADS, INTERMEDIATE_SIZE = 1024, 24, 8, 2816
TRAINING_TARGETS = {4096: 0.8, 32768: 1.5}  # minimum HOPE/Llama training tokens/s
DECODE_TARGET_CONTEXT, DECODE_TARGET_RATIO = 32768, 3.0


def build_models(max_positions: int) -> dict[str, PreTrainedModel]:
    """HOPE and Llama of the same width, depth, heads and MLP width (one CMS level against Llama's MLP)."""
    torch.manual_seed(0)
    hope_config = HopeConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_heads=NUM_HEADS,
        chunk_size=64,
        cms_levels=[{"intermediate_size": INTERMEDIATE_SIZE, "period": 1}],
        memory_implementation="auto",
    )
    llama_config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS * 2,
        num_key_value_heads=NUM_HEADS * 2,
        max_position_embeddings=max_positions,
    )
    attention = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    hope = AutoModelForCausalLM.from_config(hope_config, dtype=torch.bfloat16).to(DEVICE)
    llama = AutoModelForCausalLM.from_config(llama_config, attn_implementation=attention, dtype=torch.bfloat16)
    return {"HOPE": hope, "Llama": llama.to(DEVICE)}


def measured(run: Callable[[], float]) -> tuple[float | None, float | None]:
    """(seconds, peak GiB) of `run`, or (None, None) when it runs out of memory."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        seconds = run()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None, None
    return seconds, torch.cuda.max_memory_allocated() / 2**30


def cell(value: float | None, fmt: str) -> str:
    return "OOM" if value is None else format(value, fmt)


def ratio(hope: float | None, llama: float | None) -> str:
    return "n/a" if hope is None or llama is None else f"{hope / llama:.2f}x"


def bench_training(
    models: dict[str, PreTrainedModel], lengths: list[int], args
) -> dict[int, tuple[float, dict[str, float | None]]]:
    print("1. Training, forward+backward, batch 1, bfloat16 weights")
    print(f"{'tokens':>7} {'HOPE tok/s':>11} {'Llama tok/s':>12} {'ratio':>7} {'HOPE GiB':>9} {'Llama GiB':>10}")
    ratios = {}
    for length in lengths:
        rates, peaks = {}, {}
        for name, model in models.items():
            model.train()
            input_ids = torch.randint(0, VOCAB_SIZE, (1, length), device=DEVICE)

            def step(model=model, input_ids=input_ids) -> None:
                model(input_ids, labels=input_ids, use_cache=False).loss.backward()
                model.zero_grad(set_to_none=True)

            seconds, peaks[name] = measured(lambda step=step: cuda_seconds(step, args.warmup, args.repeats))
            rates[name] = None if seconds is None else length / seconds
        if rates["HOPE"] is not None and rates["Llama"] is not None:
            ratios[length] = (rates["HOPE"] / rates["Llama"], peaks)
        print(
            f"{length:>7} {cell(rates['HOPE'], '>11.0f')} {cell(rates['Llama'], '>12.0f')} "
            f"{ratio(rates['HOPE'], rates['Llama']):>7} {cell(peaks['HOPE'], '>9.2f')} {cell(peaks['Llama'], '>10.2f')}"
        )
    return ratios


@torch.no_grad()
def decode_seconds(model: PreTrainedModel, context: int, steps: int) -> float:
    """Median seconds per greedy token after prefilling `context` tokens (prefill not timed)."""
    model.eval()
    prompt = torch.randint(0, VOCAB_SIZE, (1, context), device=DEVICE)
    output = model(prompt, use_cache=True)
    is_hope = isinstance(model.config, HopeConfig)
    cache = output.cache
    state = {"token": output.logits[:, -1:].argmax(-1), "position": context}
    del output

    def step() -> None:
        token = state["token"]
        if is_hope:
            logits = model(token, cache=cache, use_cache=True).logits
        else:
            positions = torch.tensor([[state["position"]]], device=DEVICE)
            logits = model(token, cache=cache, position_ids=positions, use_cache=True).logits
        state["token"], state["position"] = logits[:, -1:].argmax(-1), state["position"] + 1

    return cuda_seconds(step, warmup=2, repeats=steps)


def bench_decoding(models: dict[str, PreTrainedModel], contexts: list[int], args) -> dict[int, float]:
    print(f"2. Decoding, batch 1, median of {args.decode_steps} greedy tokens after a prompt of C tokens")
    print(f"{'C':>7} {'HOPE tok/s':>11} {'Llama tok/s':>12} {'ratio':>7} {'HOPE GiB':>9} {'Llama GiB':>10}")
    ratios = {}
    for context in contexts:
        rates, peaks = {}, {}
        for name, model in models.items():
            seconds, peaks[name] = measured(partial(decode_seconds, model, context, args.decode_steps))
            rates[name] = None if seconds is None else 1 / seconds
        if rates["HOPE"] is not None and rates["Llama"] is not None:
            ratios[context] = rates["HOPE"] / rates["Llama"]
        print(
            f"{context:>7} {cell(rates['HOPE'], '>11.1f')} {cell(rates['Llama'], '>12.1f')} "
            f"{ratio(rates['HOPE'], rates['Llama']):>7} {cell(peaks['HOPE'], '>9.2f')} {cell(peaks['Llama'], '>10.2f')}"
        )
    print("  GiB: peak allocated while prefilling and decoding (weights, cache, activations).")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short lengths, few repetitions (a smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--decode-steps", type=int, default=32)
    args = parser.parse_args()
    if not torch.cuda.is_available() or not memory_kernels.triton_available():
        raise SystemExit("This benchmark needs a CUDA device and Triton (pip install 'hf-hope[triton]').")
    torch.backends.cuda.matmul.allow_tf32 = True
    lengths, contexts = ([1024, 2048], [256, 1024]) if args.quick else ([2048, 4096, 8192, 32768], [1024, 32768])
    if args.quick:
        args.repeats, args.warmup, args.decode_steps = 2, 1, 4
    models = build_models(max(*lengths, *contexts) + args.decode_steps + 8)
    counts = {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}
    print(f"{torch.cuda.get_device_name()}; parameters: " + ", ".join(f"{n} {c / 1e6:.0f}M" for n, c in counts.items()))
    print(f"Llama attention: {models['Llama'].config._attn_implementation}; HOPE memory: auto (Triton kernels)\n")
    training = bench_training(models, lengths, args)
    print()
    decoding = bench_decoding(models, contexts, args)
    print()
    print("Targets")
    for length, minimum in TRAINING_TARGETS.items():
        value = training.get(length, (None, None))[0]
        status = "not measured" if value is None else f"{value:.2f}x [{'met' if value >= minimum else 'MISSED'}]"
        print(f"  HOPE/Llama training tokens/s at {length} >= {minimum}x: {status}")
    longest = max(TRAINING_TARGETS)
    if longest in training:
        peaks = training[longest][1]
        lower = peaks["HOPE"] < peaks["Llama"]
        print(
            f"  HOPE peak training memory at {longest} below Llama's: {peaks['HOPE']:.2f} vs {peaks['Llama']:.2f} GiB "
            f"[{'met' if lower else 'MISSED'}]"
        )
    else:
        print(f"  HOPE peak training memory at {longest} below Llama's: not measured")
    value = decoding.get(DECODE_TARGET_CONTEXT)
    status = (
        "not measured" if value is None else f"{value:.2f}x [{'met' if value >= DECODE_TARGET_RATIO else 'MISSED'}]"
    )
    print(f"  HOPE/Llama decoding tokens/s at {DECODE_TARGET_CONTEXT} >= {DECODE_TARGET_RATIO}x: {status}")


if __name__ == "__main__":
    main()
