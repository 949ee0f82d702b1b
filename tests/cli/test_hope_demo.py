"""`hf-hope hope-demo`: a small HOPE model trained from scratch, end to end at a tiny size."""

import math

from hf_hope.cli import build_parser
from hf_hope.cli.hope_demo import HopeDemoSettings, run_hope_demo, stdlib_source_bytes


def test_stdlib_corpus_is_deterministic_python_source():
    first, second = stdlib_source_bytes(50_000), stdlib_source_bytes(50_000)
    assert first == second and len(first) == 50_000
    assert b"def " in first and b"import " in first


def test_demo_trains_saves_reloads_and_generates(tmp_path, capsys):
    settings = HopeDemoSettings(output_dir=str(tmp_path), max_steps=4, seq_len=64, batch_size=4, corpus_bytes=40_000)
    figures = run_hope_demo(settings)
    assert math.isfinite(figures["final_eval_loss"])
    assert figures["final_eval_loss"] < figures["initial_eval_loss"]
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert "sampled continuation" in capsys.readouterr().out


def test_cli_parses_demo_flags():
    args = build_parser().parse_args(["hope-demo", "--max_steps", "3", "--output_dir", "x"])
    assert (args.command, args.max_steps, args.output_dir) == ("hope-demo", 3, "x")
