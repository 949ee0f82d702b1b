"""CUDA event timing shared by the GPU benchmarks (imported as a sibling module when a benchmark runs as a script)."""

import statistics
from collections.abc import Callable

import torch


def cuda_seconds(run: Callable[[], None], warmup: int, repeats: int) -> float:
    """Median seconds of `run()` over `repeats` timed calls, after `warmup` untimed ones (CUDA events)."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)
