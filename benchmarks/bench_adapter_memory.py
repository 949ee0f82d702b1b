"""Peak training memory of each CMS level type on SmolLM2-135M, against full fine-tuning, one process per setting.

Each setting prepares the model as `hf-hope continual` does (`Strategy.prepare` of `full`, `lora` or `cms` with
one `cms_init`: the same parameters trainable) and trains it for a few AdamW steps on the continual benchmark's
batch (4 blocks of 128 tokens), in a fresh process so that each peak is its own. On a CPU it reports the resident
memory the model holds once prepared and the peak while training (Linux `/proc`), both above what the process
held before it loaded the model (its weights are copied out of the mapped safetensors file, so that they count);
on a GPU the same from torch's allocator. The peak covers weights, gradients, AdamW's two moments and activations,
so it is what decides whether a setting fits on a machine. Ratios are against `full`, measured first in every run.

Run: `python benchmarks/bench_adapter_memory.py` (about 5 minutes on two idle CPU cores).
"""

import argparse
import multiprocessing
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from hf_hope.continual import ContinualSettings
from hf_hope.continual.strategies.registry import get_strategy
from hf_hope.smollm2 import cached_smollm2

SETTINGS = {  # name: the continual settings whose strategy prepares the model
    "full": ContinualSettings(strategy="full"),
    "lora (attention)": ContinualSettings(strategy="lora"),
    "cms units": ContinualSettings(strategy="cms", cms_init="units"),
    "cms copy": ContinualSettings(strategy="cms", cms_init="copy"),
    "cms lowrank": ContinualSettings(strategy="cms", cms_init="lowrank"),
    "cms zero": ContinualSettings(strategy="cms", cms_init="zero"),
}


def memory_bytes(device: torch.device) -> tuple[int, int]:
    """(current, peak) memory: torch's allocator on a GPU, the process's resident set on a CPU (`/proc`)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from the current size


def training_memory(name: str, model_dir: str, args: argparse.Namespace) -> dict[str, float]:
    """GiB above the empty process: the prepared model, and the peak over `args.steps` AdamW steps."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    before, _ = memory_bytes(device)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for tensor in [*model.parameters(), *model.buffers()]:  # into memory of its own: not pages of the mapped file
        tensor.data = tensor.data.clone()
    model = get_strategy(SETTINGS[name].strategy).prepare(model, SETTINGS[name]).to(device).train()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    input_ids = torch.randint(0, model.config.vocab_size, (args.batch_size, args.block_size), device=device)
    prepared, _ = memory_bytes(device)
    reset_peak(device)
    for _ in range(args.steps):
        model(input_ids=input_ids, labels=input_ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _, peak = memory_bytes(device)
    return {
        "trainable": sum(parameter.numel() for parameter in trainable),
        "model_gib": (prepared - before) / 2**30,
        "peak_gib": (max(peak, prepared) - before) / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model_dir = str(cached_smollm2())
    context = multiprocessing.get_context("spawn")  # a fresh process per setting: its peak is its own
    print(
        f"SmolLM2-135M, float32, {args.steps} AdamW steps on batches of {args.batch_size}x{args.block_size} tokens, "
        f"on {args.device}; memory above the empty process, one process per setting"
    )
    print(f"{'setting':<18}{'trainable':>12}{'model GiB':>11}{'peak GiB':>10}{'peak vs full':>14}")
    full_peak = None
    for name in ["full", *(name for name in args.settings if name != "full")]:
        with context.Pool(1) as pool:
            figures = pool.apply(training_memory, (name, model_dir, args))
        full_peak = full_peak or figures["peak_gib"]
        print(
            f"{name:<18}{figures['trainable'] / 1e6:>11.1f}M{figures['model_gib']:>11.3f}{figures['peak_gib']:>10.3f}"
            f"{figures['peak_gib'] / full_peak:>13.2f}x"
        )


if __name__ == "__main__":
    main()
