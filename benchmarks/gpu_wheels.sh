#!/usr/bin/env bash
# Download, into .whl/ (git-ignored), the wheels that benchmarks/gpu_check.sh installs on a GPU machine that cannot
# reach a package index: the exact versions of this checkout's .venv for transformers, huggingface_hub, peft,
# accelerate, safetensors, tokenizers, pytest and everything they need, except torch, triton and numpy (the GPU
# machine's own CUDA builds stay). Built for CPython 3.12 on x86-64 Linux; about 30 MB.
# Run here, once: `make install && bash benchmarks/gpu_wheels.sh`, then carry `.whl` with the device call.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=$(.venv/bin/python - <<'PY'
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

kept_on_the_gpu_machine = {"torch", "triton", "numpy", "setuptools", "pip"}
pending = ["transformers", "huggingface-hub", "peft", "accelerate", "safetensors", "tokenizers", "pytest"]
pinned = {}
while pending:
    name = pending.pop()
    key = name.lower().replace("_", "-")
    if key in pinned or key in kept_on_the_gpu_machine:
        continue
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        continue
    pinned[key] = dist.version
    for line in dist.requires or []:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            pending.append(requirement.name)
print(" ".join(f"{name}=={version}" for name, version in sorted(pinned.items())))
PY
)
rm -rf .whl
platforms=()
for platform in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$platform")
done
# shellcheck disable=SC2086  # one word per requirement
.venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl $requirements
du -sh .whl
