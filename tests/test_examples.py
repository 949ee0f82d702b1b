"""The multi-GPU examples: the memory calculator counts what a real model holds, and the Trainer script launches
on two CPU processes with accelerate (DDP over gloo) and writes checkpoints with the clock's state."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import hf_hope

from .helpers import tiny_family_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "multi_gpu"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("init", ["zero", "lowrank", "units", "copy"])
def test_the_memory_calculator_counts_what_a_real_retrofitted_model_holds(init):
    rank_memory = load_example("rank_memory")
    config, adapter = tiny_family_config("llama"), hf_hope.CMSConfig(init=init, intermediate_size=16)
    counted = rank_memory.counts(config, adapter)
    torch.manual_seed(0)
    model = hf_hope.retrofit(AutoModelForCausalLM.from_config(config), adapter)
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    slow = [level for level in hf_hope.LevelClock(model).levels if level.period == 16]
    assert counted["A"] == trainable > 0
    assert counted["P"] == sum(parameter.numel() for parameter in model.parameters()) - trainable
    assert counted["S"] == sum(level.numel() for level in slow) > 0
    assert counted["U"] == max(
        sum(p.numel() for p in model.model.layers[0].parameters()),
        sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.model.layers.parameters()),
    )


@pytest.mark.slow
def test_the_trainer_example_runs_on_two_processes_and_checkpoints_the_clock(tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
        str(EXAMPLES / "train_retrofit.py"), "--max_steps", "4", "--excerpts", "--output_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert "'level_clock/p1_updates': 4" in finished.stdout
    for step in (2, 4):
        assert (tmp_path / "run" / f"checkpoint-{step}" / "level_clock.safetensors").is_file()
