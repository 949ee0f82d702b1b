"""Benchmark the level clock's accumulate kernel against the device's copy bandwidth and `torch._foreach_add_`.

For one level of `--params` parameters split into tensors of realistic sizes, measured in one run on a GPU:
- copy bandwidth: `torch.Tensor.copy_` of a float32 tensor of that size (bytes read + written per second);
- the Triton kernel adding float32 gradients into the level's float32 buffer (reads gradient and buffer, writes
  buffer: 12 bytes per parameter), and its due-step variant (also writes the update back, clears the buffer);
- `torch._foreach_add_` doing the same accumulation over the buffer's per-tensor views.
Each line prints achieved bandwidth and its fraction of the copy bandwidth. Timings use CUDA events, median of
`--repeats` after warm-up. Needs a CUDA device and the `triton` extra.

Run: `python benchmarks/bench_clock_kernels.py` (default 100M parameters).
"""

import argparse
from collections.abc import Callable

import torch
from cuda_timing import cuda_seconds  # sibling module: benchmarks run as scripts
from torch import nn

from hf_hope.clock import kernel as clock_kernels
from hf_hope.clock.buffer import LevelBuffer

KERNEL_TARGET_FRACTION = 0.8


def level_shapes(total: int, hidden: int = 4096) -> list[tuple[int, ...]]:
    """Weight matrices of a transformer-like level (hidden x 4*hidden and back) plus odd-sized vectors."""
    shapes, count = [], 0
    while count < total:
        for shape in ((4 * hidden, hidden), (hidden, 4 * hidden), (hidden,), (4 * hidden + 3,)):
            shapes.append(shape)
            count += torch.Size(shape).numel()
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=100_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not torch.cuda.is_available() or not clock_kernels.triton_available():
        raise SystemExit("This benchmark needs a CUDA device and Triton (pip install 'hf-hope[triton]').")
    torch.manual_seed(0)
    parameters = [nn.Parameter(torch.randn(shape, device="cuda")) for shape in level_shapes(args.params)]
    numel = sum(parameter.numel() for parameter in parameters)
    grads = [torch.randn_like(parameter) for parameter in parameters]
    kernel = LevelBuffer(parameters, implementation="triton")
    reference = LevelBuffer(parameters, implementation="torch")

    source, target = torch.randn(numel, device="cuda"), torch.empty(numel, device="cuda")
    copy_seconds = cuda_seconds(lambda: target.copy_(source), 3, args.repeats)
    copy_bandwidth = 8 * numel / copy_seconds

    def accumulate(due: bool) -> Callable[[], None]:
        def run() -> None:
            for parameter, grad in zip(parameters, grads, strict=True):
                parameter.grad = grad
            kernel.add(due=due, scale=0.5)

        return run

    def foreach() -> None:
        torch._foreach_add_(reference.views, grads)

    rows = {
        "copy (reference bandwidth)": (copy_seconds, 8 * numel),
        "Triton accumulate": (cuda_seconds(accumulate(False), 3, args.repeats), 12 * numel),
        "Triton accumulate + due write-back": (cuda_seconds(accumulate(True), 3, args.repeats), 16 * numel),
        "torch._foreach_add_": (cuda_seconds(foreach, 3, args.repeats), 12 * numel),
    }
    print(
        f"\nLevel of {numel / 1e6:.0f}M float32 parameters in {len(parameters)} tensors, {torch.cuda.get_device_name()}"
    )
    print(f"{'operation':<38}{'ms':>9}{'GB/s':>9}{'of copy':>9}")
    for name, (seconds, num_bytes) in rows.items():
        bandwidth = num_bytes / seconds
        print(f"{name:<38}{seconds * 1e3:>9.3f}{bandwidth / 1e9:>9.0f}{bandwidth / copy_bandwidth:>9.2f}")
    fraction = rows["Triton accumulate"][1] / rows["Triton accumulate"][0] / copy_bandwidth
    speedup = rows["torch._foreach_add_"][0] / rows["Triton accumulate"][0]
    print(
        f"\nkernel at {fraction:.2f} of copy bandwidth (target >= {KERNEL_TARGET_FRACTION}); "
        f"{speedup:.2f}x the speed of torch._foreach_add_ (target > 1)"
    )


if __name__ == "__main__":
    main()
