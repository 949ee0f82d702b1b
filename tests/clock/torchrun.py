"""Launch a test worker module on several processes with torchrun, and fail the test with its log."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300


def run_torchrun(module: str, output_dir: Path, world_size: int, *arguments: str, gpus: bool = False) -> None:
    """Run `python -m module output_dir *arguments` on `world_size` processes (on CPUs, unless `gpus`); the log
    goes to `output_dir/torchrun.log`."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={world_size}",
        "-m",
        module,
        str(output_dir),
        *arguments,
    ]
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path}
    if not gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    log_path = output_dir / f"torchrun{'-' if arguments else ''}{'-'.join(arguments)}.log"
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
