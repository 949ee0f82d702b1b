"""Benchmark a ~350M HOPE model (memory kernels) against a same-size Llama (SDPA / flash attention) on one GPU.

Measured in one run, bfloat16 weights, batch 1:
1. training: forward+backward tokens/s and peak memory at 2K, 4K, 8K and 32K tokens (the HOPE memories compute
   in float32 inside, as they always do), for HOPE as it is and with `memory_recompute_chunks` (its memory's
   activations recomputed in backward, as flash attention recomputes attention's);
2. decoding: greedy tokens/s and memory after a prompt of 1K and of 32K tokens (HOPE's fused decoding step vs
   Llama's key/value cache).
Every ratio is HOPE / Llama from the same run; a row that runs out of memory is reported as OOM and the table goes
on. Peak memory is each model's own: its weights plus the peak it allocated over them (the others stay
resident). Llama uses `attn_implementation="flash_attention_2"` when flash-attn is installed, SDPA (whose CUDA
backend is flash attention for bfloat16) otherwise. Needs a CUDA device and the `triton` extra.

Run: `python benchmarks/bench_hope_vs_llama_long.py` (several minutes on an H100), or `--quick`.
"""

import argparse
import copy
import importlib.util
from collections.abc import Callable
from functools import partial

import torch
from cuda_timing import cuda_seconds  # sibling module: benchmarks run as scripts
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel

from hf_hope import HopeConfig
from hf_hope.modeling.memory_triton_common import triton_available

DEVICE = "cuda"
VOCAB_SIZE = 32000
HIDDEN_SIZE, NUM_LAYERS, NUM_HEADS, INTERMEDIATE_SIZE = 1024, 24, 8, 2816
TRAINING_TARGETS = {4096: 0.8, 32768: 1.5}  # minimum HOPE/Llama training tokens/s
RECOMPUTE_CHUNKS = 16  # at 32K tokens and chunks of 64: 32 kept states instead of 512
DECODE_TARGET_CONTEXT, DECODE_TARGET_RATIO = 32768, 3.0


def build_models(max_positions: int) -> dict[str, PreTrainedModel]:
    """HOPE (as it is and recomputing its memory) and Llama of the same width, depth, heads and MLP width (one CMS
    level against Llama's MLP)."""
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
    recompute_config = copy.deepcopy(hope_config)
    recompute_config.memory_recompute_chunks = RECOMPUTE_CHUNKS
    recomputing = AutoModelForCausalLM.from_config(recompute_config, dtype=torch.bfloat16).to(DEVICE)
    recomputing.load_state_dict(hope.state_dict())
    llama = AutoModelForCausalLM.from_config(llama_config, attn_implementation=attention, dtype=torch.bfloat16)
    return {"HOPE": hope, "HOPE-rc": recomputing, "Llama": llama.to(DEVICE)}


def measured(model: PreTrainedModel, run: Callable[[], float]) -> tuple[float | None, float | None]:
    """(seconds, peak GiB) of `run` on `model`, or (None, None) when it runs out of memory.

    The peak is the model's own: its weights plus the most `run` allocated beyond what was resident before it.
    """
    torch.cuda.empty_cache()
    resident = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    try:
        seconds = run()
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None, None
    weights = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
    return seconds, (torch.cuda.max_memory_allocated() - resident + weights) / 2**30


def cell(value: float | None, fmt: str) -> str:
    return "OOM" if value is None else format(value, fmt)


def ratio(hope: float | None, llama: float | None) -> str:
    return "n/a" if hope is None or llama is None else f"{hope / llama:.2f}x"


def bench_training(
    models: dict[str, PreTrainedModel], lengths: list[int], args
) -> dict[int, tuple[dict[str, float | None], dict[str, float | None]]]:
    """`{length: (tokens/s, peak GiB)}` of every model, each a `{name: value}` dict (None: out of memory)."""
    print("1. Training, forward+backward, batch 1, bfloat16 weights; ratios against Llama")
    hopes = [name for name in models if name != "Llama"]
    header = f"{'tokens':>7} {'Llama tok/s':>12} {'Llama GiB':>10}"
    for name in hopes:
        header += f" {name + ' tok/s':>14} {'ratio':>6} {name + ' GiB':>12}"
    print(header)
    results = {}
    for length in lengths:
        rates, peaks = {}, {}
        for name, model in models.items():
            model.train()
            input_ids = torch.randint(0, VOCAB_SIZE, (1, length), device=DEVICE)

            def step(model=model, input_ids=input_ids) -> None:
                model(input_ids, labels=input_ids, use_cache=False).loss.backward()
                model.zero_grad(set_to_none=True)

            seconds, peaks[name] = measured(model, lambda step=step: cuda_seconds(step, args.warmup, args.repeats))
            rates[name] = None if seconds is None else length / seconds
        results[length] = (rates, peaks)
        row = f"{length:>7} {cell(rates['Llama'], '>12.0f')} {cell(peaks['Llama'], '>10.2f')}"
        for name in hopes:
            speed = ratio(rates[name], rates["Llama"])
            row += f" {cell(rates[name], '>14.0f')} {speed:>6} {cell(peaks[name], '>12.2f')}"
        print(row)
    print(f"  HOPE-rc: HOPE with memory_recompute_chunks={RECOMPUTE_CHUNKS}.")
    return results


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
            seconds, peaks[name] = measured(model, partial(decode_seconds, model, context, args.decode_steps))
            rates[name] = None if seconds is None else 1 / seconds
        if rates["HOPE"] is not None and rates["Llama"] is not None:
            ratios[context] = rates["HOPE"] / rates["Llama"]
        print(
            f"{context:>7} {cell(rates['HOPE'], '>11.1f')} {cell(rates['Llama'], '>12.1f')} "
            f"{ratio(rates['HOPE'], rates['Llama']):>7} {cell(peaks['HOPE'], '>9.2f')} {cell(peaks['Llama'], '>10.2f')}"
        )
    print("  GiB: each model's peak while prefilling and decoding (weights, cache, activations).")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short lengths, few repetitions (a smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--lengths", type=int, nargs="+", help="training lengths (default 2048 4096 8192 32768)")
    parser.add_argument("--contexts", type=int, nargs="+", help="decoding prompt lengths (default 1024 32768)")
    args = parser.parse_args()
    if not torch.cuda.is_available() or not triton_available():
        raise SystemExit("This benchmark needs a CUDA device and Triton (pip install 'hf-hope[triton]').")
    torch.backends.cuda.matmul.allow_tf32 = True
    lengths, contexts = ([1024, 2048], [256, 1024]) if args.quick else ([2048, 4096, 8192, 32768], [1024, 32768])
    if args.quick:
        args.repeats, args.warmup, args.decode_steps = 2, 1, 4
    lengths, contexts = args.lengths or lengths, args.contexts or contexts
    models = build_models(max(*lengths, *contexts) + args.decode_steps + 8)
    counts = {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}
    print(f"{torch.cuda.get_device_name()}; parameters: " + ", ".join(f"{n} {c / 1e6:.0f}M" for n, c in counts.items()))
    print(f"Llama attention: {models['Llama'].config._attn_implementation}; HOPE memory: auto (Triton kernels)\n")
    training = bench_training(models, lengths, args)
    print()
    decoding = bench_decoding({name: models[name] for name in ("HOPE", "Llama")}, contexts, args)
    print()
    print("Targets")
    for length, minimum in TRAINING_TARGETS.items():
        rates = training.get(length, ({}, {}))[0]
        for name in ("HOPE", "HOPE-rc"):
            value = None if rates.get(name) is None or rates.get("Llama") is None else rates[name] / rates["Llama"]
            status = "not measured" if value is None else f"{value:.2f}x [{'met' if value >= minimum else 'MISSED'}]"
            print(f"  {name}/Llama training tokens/s at {length} >= {minimum}x: {status}")
    longest = max(TRAINING_TARGETS)
    peaks = training.get(longest, ({}, {}))[1]
    for name in ("HOPE", "HOPE-rc"):
        if peaks.get(name) is None or peaks.get("Llama") is None:
            print(f"  {name} peak training memory at {longest} below Llama's: not measured")
            continue
        lower = peaks[name] < peaks["Llama"]
        print(
            f"  {name} peak training memory at {longest} below Llama's: {peaks[name]:.2f} vs {peaks['Llama']:.2f} GiB "
            f"[{'met' if lower else 'MISSED'}]"
        )
    value = decoding.get(DECODE_TARGET_CONTEXT)
    status = (
        "not measured" if value is None else f"{value:.2f}x [{'met' if value >= DECODE_TARGET_RATIO else 'MISSED'}]"
    )
    print(f"  HOPE/Llama decoding tokens/s at {DECODE_TARGET_CONTEXT} >= {DECODE_TARGET_RATIO}x: {status}")


if __name__ == "__main__":
    main()
