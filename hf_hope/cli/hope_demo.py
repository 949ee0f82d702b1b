"""`hf-hope hope-demo`: train a small HOPE model from scratch on real Python source, save it, reload it and generate.

It shows the model working end to end with the stock `transformers` tooling (`AutoConfig`, `Trainer`,
`save_pretrained`, `AutoModelForCausalLM.from_pretrained`, `generate`). Tokens are the UTF-8 bytes of the Python
standard library's own source files, so nothing is downloaded.
"""

import math
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainingArguments

from ..continual.settings import check_int, check_number

BYTE_VOCAB = 256
BOS_TOKEN = 10  # newline: generation starts at the beginning of a line


@dataclass
class HopeDemoSettings:
    """What the demo trains and for how long (the defaults take about two minutes on two CPU cores)."""

    output_dir: str = field(default="runs/demo", metadata={"help": "where the trained model is saved"})
    max_steps: int = field(default=400, metadata={"help": "optimizer steps"})
    seq_len: int = field(default=256, metadata={"help": "bytes per training sequence"})
    batch_size: int = field(default=8, metadata={"help": "sequences per step"})
    learning_rate: float = field(default=3e-3, metadata={"help": "peak learning rate (cosine schedule)"})
    corpus_bytes: int = field(default=2_000_000, metadata={"help": "bytes of standard-library source to use"})
    seed: int = field(default=0, metadata={"help": "random seed of initialisation, data order and sampling"})

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "corpus_bytes"):
            check_int(name, getattr(self, name))
        check_int("seq_len", self.seq_len, 2, "a window needs at least 2 bytes")
        check_int("seed", self.seed, 0)
        check_number("learning_rate", self.learning_rate, positive=True)


def stdlib_source_bytes(max_bytes: int) -> bytes:
    """Concatenated source of the standard library's top-level modules, in a fixed order."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    if not files:
        raise FileNotFoundError(f"No Python source files found in {sysconfig.get_paths()['stdlib']}.")
    chunks, total = [], 0
    for path in files:
        data = path.read_bytes()
        chunks.append(data)
        total += len(data)
        if total >= max_bytes:
            break
    return b"".join(chunks)[:max_bytes]


class ByteWindows(Dataset):
    """Non-overlapping windows of `seq_len` bytes, as `input_ids` and `labels` for causal LM training."""

    def __init__(self, data: bytes, seq_len: int) -> None:
        tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
        self.windows = tokens[: len(tokens) // seq_len * seq_len].view(-1, seq_len)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.windows[index], "labels": self.windows[index]}


def run_hope_demo(settings: HopeDemoSettings) -> dict[str, float]:
    """Train, evaluate, save, reload and generate; returns the measured figures."""
    torch.manual_seed(settings.seed)
    corpus = stdlib_source_bytes(settings.corpus_bytes)
    split = int(len(corpus) * 0.95)
    train_set, eval_set = ByteWindows(corpus[:split], settings.seq_len), ByteWindows(corpus[split:], settings.seq_len)
    config = AutoConfig.for_model(
        "hope",
        vocab_size=BYTE_VOCAB,
        hidden_size=128,
        num_hidden_layers=2,
        num_heads=4,
        chunk_size=32,
        cms_levels=[{"intermediate_size": 256, "period": 1}, {"intermediate_size": 256, "period": 4}],
        bos_token_id=BOS_TOKEN,
        eos_token_id=None,
        pad_token_id=None,
    )
    model = AutoModelForCausalLM.from_config(config)
    print(
        f"HOPE model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; "
        f"{len(train_set)} training windows of {settings.seq_len} bytes of Python source"
    )
    args = TrainingArguments(
        output_dir=settings.output_dir,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=settings.max_steps // 10,
        logging_steps=max(1, settings.max_steps // 10),
        save_strategy="no",
        report_to="none",
        seed=settings.seed,
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning without a GPU only warns
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set)
    initial_loss = trainer.evaluate()["eval_loss"]
    train_seconds = trainer.train().metrics["train_runtime"]
    final_loss = trainer.evaluate()["eval_loss"]

    model_dir = Path(settings.output_dir) / "model"
    trainer.save_model(str(model_dir))
    reloaded = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = torch.tensor([list(b"\ndef ")])
    torch.manual_seed(settings.seed)
    generated = reloaded.generate(prompt, max_new_tokens=300, do_sample=True, top_k=40)
    text = bytes(generated[0].tolist()).decode("utf-8", errors="replace")
    text = "\n".join(line.rstrip() for line in text.splitlines())

    figures = {
        "initial_eval_loss": initial_loss,
        "final_eval_loss": final_loss,
        "final_eval_bits_per_byte": final_loss / math.log(2),
        "train_seconds": train_seconds,
    }
    print(
        f"\nEval loss {initial_loss:.3f} -> {final_loss:.3f} nats/byte "
        f"({figures['final_eval_bits_per_byte']:.2f} bits/byte) after {settings.max_steps} steps "
        f"in {train_seconds:.0f} s"
    )
    print(
        f"Saved to {model_dir}; sampled continuation of 'def ' from the reloaded model:\n{'-' * 60}\n{text}\n{'-' * 60}"
    )
    return figures
