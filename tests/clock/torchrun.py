"""Launch a test worker module on several CPU processes with torchrun (gloo), and fail the test with its log."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300


def run_torchrun(module: str, output_dir: Path, world_size: int) -> None:
    """Run `python -m module output_dir` on `world_size` processes; the log goes to `output_dir/torchrun.log`."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={world_size}",
        "-m",
        module,
        str(output_dir),
    ]
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": python_path}
    log_path = output_dir / "torchrun.log"
    with (
        log_path.open("w") as log,
        subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log) as torchrun,
    ):
        try:
            torchrun.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # SIGTERM lets torchrun stop its workers, which run in sessions of their own; SIGKILL would orphan them.
            torchrun.terminate()
            try:
                torchrun.wait(timeout=60)  # torchrun gives its workers 30 s before it kills them
            except subprocess.TimeoutExpired:
                torchrun.kill()
            pytest.fail(f"torchrun did not finish within {TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
    if torchrun.returncode != 0:
        pytest.fail(f"torchrun failed with exit status {torchrun.returncode}:\n{log_path.read_text()[-4000:]}")
