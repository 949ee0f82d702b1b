"""Peak training memory and step time of HOPE with `memory_recompute_chunks`, against the same model without.

Every setting trains the same model (same weights, same tokens) for one forward+backward in its own process, so
that each peak is its own: on a CPU the peak resident memory above what the process held before the step (Linux
`/proc`), on a GPU the peak allocated above the resident weights. Ratios are against `None` (every chunk's state
kept) at the same length, from the same run. The default model is small enough for a CPU (2 layers, 4 heads of
64, chunks of 64); `--hidden-size`, `--layers` and `--lengths` scale it up on a GPU.

Run: `python benchmarks/bench_memory_recompute.py` (about 4 minutes on two CPU cores), or `--quick`.
"""

import argparse
import multiprocessing
import statistics
import time
from pathlib import Path

import torch

from hf_hope import HopeConfig, HopeForCausalLM

SETTINGS = (None, 4, 16, 64)  # memory_recompute_chunks


def resident_bytes() -> int:
    """Current and peak resident memory of this process, from `/proc/self/status`."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def step_peak(recompute: int | None, length: int, args: argparse.Namespace) -> tuple[float, float]:
    """(median seconds, peak GiB above the model) of one forward+backward at `length` tokens, after a warm-up."""
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    config = HopeConfig(
        vocab_size=1024,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        num_heads=args.hidden_size // 64,
        chunk_size=64,
        cms_levels=[{"intermediate_size": 2 * args.hidden_size, "period": 1}],
        memory_recompute_chunks=recompute,
    )
    device = torch.device(args.device)
    model = HopeForCausalLM(config).to(device).train()
    input_ids = torch.randint(0, config.vocab_size, (1, length), generator=torch.Generator().manual_seed(1))
    input_ids = input_ids.to(device)

    def step() -> None:
        model(input_ids, labels=input_ids, use_cache=False).loss.backward()
        model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.synchronize()
        resident = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from the current size
        resident, _ = resident_bytes()
    step()
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resident_bytes()[1]
    return statistics.median(times), (peak - resident) / 2**30


def run_in_process(pool, recompute: int | None, length: int, args: argparse.Namespace) -> tuple[float, float]:
    return pool.apply(step_peak, (recompute, length, args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short length (a smoke test)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.repeats = [1024], 1
    context = multiprocessing.get_context("spawn")  # a fresh process per setting: its peak is its own
    print(
        f"HOPE, {args.layers} layers of width {args.hidden_size} ({args.hidden_size // 64} heads of 64), chunks of "
        f"64, batch 1, float32, on {args.device}; peak memory above the model, one process per setting"
    )
    print(f"{'tokens':>7} {'recompute':>9} {'seconds':>8} {'time ratio':>10} {'peak GiB':>9} {'memory ratio':>12}")
    for length in args.lengths:
        baseline = None
        for recompute in SETTINGS:
            with context.Pool(1) as pool:
                seconds, peak = run_in_process(pool, recompute, length, args)
            baseline = baseline or (seconds, peak)
            print(
                f"{length:>7} {str(recompute):>9} {seconds:>8.2f} {seconds / baseline[0]:>9.2f}x {peak:>9.3f} "
                f"{peak / baseline[1]:>11.2f}x"
            )


if __name__ == "__main__":
    main()
