"""Benchmark the Nested Learning optimizers against AdamW and Muon on real text, side by side in one run.

A small HOPE and a small Llama (hidden 128, 2 layers, byte vocabulary of 256) train for the same steps on the same
batches from the same seed with AdamW, torch.optim.Muon (2-D hidden matrices; AdamW for the rest), DeltaMomentum,
DeepMomentum, M3 (its default EMA reading) and M3 as Algorithm 1 is written (summed momenta). The text is the code
and literature domains of `hf_hope.data.load_domains` (each batch half Python standard library source, half
Shakespeare): the full prepared data when `hf-hope prepare-data --benchmark domains` has been run, else the small
excerpts shipped in the package (the header says which). Nothing is downloaded.

All the runs of one model advance in lockstep, one step each in rotating order, so that a busy machine slows them
alike; the step time is the median over the steps after two warm-up steps. The script prints each run's final
validation loss (mean over the two domains' validation batches) and its step time relative to AdamW on the same
model, next to the targets (lower loss than AdamW, step time within 1.3x). `--sweep` repeats every optimizer at its
learning rate times 1/3, 1 and 3 (the same grid for all, AdamW included) and prints every configuration.

Run: `python benchmarks/bench_optimizers.py` (one thread; on a busy 2-core machine about 2 minutes per
optimizer per 100 steps for the Llama, 6 for HOPE), `--steps N`, `--models`, `--optimizers`, `--sweep`, `--quick`.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from hf_hope import M3, DeepMomentum, DeltaMomentum, HopeConfig, HopeForCausalLM
from hf_hope.data import DataPreparationSettings, load_domains
from hf_hope.data.prepare import MANIFEST, domains_dir

TIME_TARGET = 1.3
SEQ_LEN, BATCH = 128, 8
DOMAINS = ("code", "literature")
SWEEP = (1 / 3, 1.0, 3.0)
Named = list[tuple[str, torch.Tensor]]


def domain_bytes() -> tuple[str, dict[str, dict[str, torch.Tensor]]]:
    """{domain: {split: UTF-8 bytes of its documents joined}} of the code and literature domains, and the source."""
    full = (domains_dir(DataPreparationSettings()) / MANIFEST).is_file()
    datasets = load_domains() if full else load_domains(excerpts=True)
    source = "full prepared data" if full else "packaged excerpts (run `hf-hope prepare-data` for the full data)"
    tokens = {
        domain: {
            split: torch.frombuffer(bytearray("\n\n".join(datasets[domain][split]["text"]).encode()), dtype=torch.uint8)
            .long()
            .clone()
            for split in ("train", "validation")
        }
        for domain in DOMAINS
    }
    return source, tokens


def batches(streams: list[torch.Tensor], count: int, seed: int) -> list[torch.Tensor]:
    """`count` batches of BATCH windows of SEQ_LEN bytes, the rows split evenly between the `streams`."""
    generator = torch.Generator().manual_seed(seed)
    per_stream = BATCH // len(streams)
    result = []
    for _ in range(count):
        rows = []
        for tokens in streams:
            starts = torch.randint(0, len(tokens) - SEQ_LEN, (per_stream,), generator=generator)
            rows += [tokens[s : s + SEQ_LEN] for s in starts.tolist()]
        result.append(torch.stack(rows))
    return result


def hope() -> PreTrainedModel:
    levels = [{"intermediate_size": 256, "period": 1}, {"intermediate_size": 128, "period": 4}]
    config = HopeConfig(
        vocab_size=256, hidden_size=128, num_hidden_layers=2, num_heads=4, chunk_size=16, cms_levels=levels
    )
    return HopeForCausalLM(config)


def llama() -> PreTrainedModel:
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=SEQ_LEN,
    )
    return LlamaForCausalLM(config)


MODELS = {"Llama": llama, "HOPE": hope}


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """Muon's usual split: 2-D hidden weights; embeddings, lm_head and vectors go to AdamW."""
    return p.ndim == 2 and "embed" not in name and "lm_head" not in name


def not_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    return not is_hidden_matrix(name, p)


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on the hidden matrices and AdamW on the rest, stepped together."""

    def __init__(self, named: Named, lr: float, adamw_lr: float) -> None:
        matrices = [p for n, p in named if is_hidden_matrix(n, p)]
        others = [p for n, p in named if not is_hidden_matrix(n, p)]
        self.parts = [
            torch.optim.Muon(matrices, lr=lr, weight_decay=0.0),
            torch.optim.AdamW(others, lr=adamw_lr, weight_decay=0.0),
        ]
        super().__init__([p for _, p in named], {})

    def step(self, closure: Callable[[], float] | None = None) -> None:
        for part in self.parts:
            part.step()


ADAMW_LR = 3e-3
LITERAL_M3 = "M3-sum"  # Algorithm 1 as written (summed momenta); not in the default run: `--optimizers ... M3-sum`
# name -> (base learning rate, builder(named parameters, learning rate)); every other setting is the optimizer's
# default, except the AdamW part of the matrix optimizers, which gets AdamW's learning rate.
OPTIMIZERS: dict[str, tuple[float, Callable[[Named, float], torch.optim.Optimizer]]] = {
    "AdamW": (ADAMW_LR, lambda named, lr: torch.optim.AdamW([p for _, p in named], lr=lr, weight_decay=0.0)),
    "Muon": (0.02, lambda named, lr: MuonWithAdamW(named, lr=lr, adamw_lr=ADAMW_LR)),
    "DeltaMomentum": (
        3e-4,
        lambda named, lr: DeltaMomentum([p for _, p in named], lr=lr, preconditioner="adam"),
    ),
    "DeepMomentum": (
        0.02,
        lambda named, lr: DeepMomentum(named, lr=lr, adamw_lr=ADAMW_LR, adamw_params=not_hidden_matrix),
    ),
    "M3": (1e-4, lambda named, lr: M3(named, lr=lr, adamw_lr=ADAMW_LR, adamw_params=not_hidden_matrix)),
    LITERAL_M3: (
        1e-4,
        lambda named, lr: M3(named, lr=lr, accumulation="sum", adamw_lr=ADAMW_LR, adamw_params=not_hidden_matrix),
    ),
}


@dataclass
class Run:
    """One model trained by one optimizer configuration."""

    name: str
    lr: float
    model: PreTrainedModel
    optimizer: torch.optim.Optimizer
    seconds: list[float] = field(default_factory=list)
    diverged: bool = False

    def step(self, batch: torch.Tensor) -> None:
        if self.diverged:
            return
        start = time.perf_counter()
        loss = self.model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.seconds.append(time.perf_counter() - start)
        self.diverged = not torch.isfinite(loss).item()

    def step_time(self) -> float:
        return statistics.median(self.seconds[2:] or self.seconds)


@torch.no_grad()
def validation_loss(model: PreTrainedModel, data: list[torch.Tensor]) -> float:
    model.eval()
    losses = [model(input_ids=batch, labels=batch).loss.item() for batch in data]
    model.train()
    return sum(losses) / len(losses)


def train_lockstep(build: Callable[[], PreTrainedModel], configs: list[tuple[str, float]], train_data) -> list[Run]:
    """Every configuration from the same initial weights, advanced one step each in rotating order."""
    torch.manual_seed(0)
    initial = build().state_dict()
    runs = []
    for name, lr in configs:
        model = build()
        model.load_state_dict(initial)
        model.train()
        runs.append(Run(name, lr, model, OPTIMIZERS[name][1](list(model.named_parameters()), lr)))
    for step, batch in enumerate(train_data):
        for offset in range(len(runs)):
            runs[(step + offset) % len(runs)].step(batch)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sweep", action="store_true", help="every optimizer at lr x 1/3, 1, 3")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    default = [name for name in OPTIMIZERS if name != LITERAL_M3]
    parser.add_argument("--optimizers", nargs="+", choices=list(OPTIMIZERS), default=default)
    parser.add_argument("--quick", action="store_true", help="a few steps, to check that everything runs")
    args = parser.parse_args()
    steps, val_batches = (6, 2) if args.quick else (args.steps, 8)
    torch.set_num_threads(1)  # on a shared CPU, two threads spin at every barrier: 10-20x slower per step here
    source, tokens = domain_bytes()
    train_data = batches([tokens[d]["train"] for d in DOMAINS], steps, seed=1)
    val_data = batches([tokens[d]["validation"] for d in DOMAINS], val_batches, seed=2)
    sizes = ", ".join(f"{d} {len(tokens[d]['train']):,} / {len(tokens[d]['validation']):,}" for d in DOMAINS)
    print(f"data: {source}; train / validation bytes: {sizes}", flush=True)
    print(f"{steps} steps of {BATCH}x{SEQ_LEN} bytes (half code, half literature); lockstep timing, median")
    scales = SWEEP if args.sweep else (1.0,)
    names = ["AdamW", *(name for name in args.optimizers if name != "AdamW")]  # AdamW: the baseline of the ratios
    configs = [(name, OPTIMIZERS[name][0] * scale) for name in names for scale in scales]
    print(f"{'model':<6} {'optimizer':<14} {'lr':>8} {'val loss':>9} {'vs AdamW':>9} {'s/step':>7} {'time ratio':>10}")
    for model_name in args.models:
        build = MODELS[model_name]
        runs = train_lockstep(build, configs, train_data)
        losses = [float("nan") if run.diverged else validation_loss(run.model, val_data) for run in runs]
        base = next(i for i, run in enumerate(runs) if run.name == "AdamW" and run.lr == ADAMW_LR)
        for run, loss in zip(runs, losses, strict=True):
            verdict = "" if run.name == "AdamW" else ("better" if loss < losses[base] else "worse")
            ratio = run.step_time() / runs[base].step_time()
            flag = "ok" if ratio <= TIME_TARGET else f"> {TIME_TARGET}"
            print(
                f"{model_name:<6} {run.name:<14} {run.lr:>8.2g} {loss:>9.4f} {verdict:>9} {run.step_time():>7.3f} "
                f"{ratio:>7.2f}x {flag}",
                flush=True,
            )


if __name__ == "__main__":
    main()
