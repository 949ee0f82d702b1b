"""What the fault tests share: a child process that must die, byte-level damage, and folder comparisons."""

import os
import subprocess
import sys
from pathlib import Path

import torch

import hf_hope
from hf_hope.clock.online_learner import OnlineLearner

from ..helpers import tiny_config, tiny_family_model

REPOSITORY = Path(__file__).resolve().parents[2]
LEVELS = [{"period": None}, {"period": 4}]


def killed(code: str, *arguments: str) -> None:
    """Run `code` in a child process that must die with status 9 (its `os._exit(9)`)."""
    finished = subprocess.run(
        [sys.executable, "-c", code, *arguments], cwd=REPOSITORY, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 9, finished.stderr[-3000:]


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def random_bytes(data: bytes) -> bytes:
    return os.urandom(max(len(data), 64))


def tiny_llama() -> torch.nn.Module:
    return tiny_family_model("llama")


def learner_that_saw_40_tokens() -> OnlineLearner:
    """A tiny HOPE online learner, seeded, after observing tokens 3..42: the state the learner-save tests save first."""
    torch.manual_seed(0)
    learner = OnlineLearner(hf_hope.HopeForCausalLM(tiny_config()), chunk_size=16, context_size=8)
    learner.observe(torch.arange(3, 43))
    return learner
