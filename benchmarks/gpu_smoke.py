"""Smoke test of the whole stack on a GPU: HOPE and a retrofitted Llama through the Triton kernels.

Each check runs the same computation with the kernels (`memory_implementation="triton"`, the clock's
`implementation="triton"`) and with the torch path, and compares them (relative error, Frobenius norm):
1. HOPE forward and backward in float32 and bfloat16, and with `memory_recompute_chunks`;
2. HOPE `generate()` (the fused decoding step) against the torch path's tokens;
3. a retrofitted Llama's forward, backward and `generate()` in bfloat16;
4. the level clock's accumulate kernel against its torch twin over a few optimizer steps.
Prints one PASS/FAIL line per check and exits 1 if any failed. `--device cpu` is the dry run: the same checks
with the kernels in Triton's interpreter (set `TRITON_INTERPRET=1`), at smaller sizes.

Run: `python benchmarks/gpu_smoke.py` (about a minute on an H100, compilation included).
"""

import argparse
import copy
import sys
from collections.abc import Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import hf_hope
from hf_hope.clock.core import LevelClock

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return ((actual.double() - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def hope_model(device: str, dtype: torch.dtype, small: bool, **overrides) -> hf_hope.HopeForCausalLM:
    """A HOPE model with heads of 64 (16 in the dry run) and chunks of 64 (8), initialised from seed 0."""
    width, heads = (64, 4) if small else (512, 8)
    torch.manual_seed(0)
    config = hf_hope.HopeConfig(
        vocab_size=256,
        hidden_size=width,
        num_hidden_layers=2,
        num_heads=heads,
        chunk_size=8 if small else 64,
        cms_levels=[{"intermediate_size": 2 * width, "period": 1}, {"intermediate_size": width, "period": 4}],
        **overrides,
    )
    return hf_hope.HopeForCausalLM(config).to(device=device, dtype=dtype)


def with_implementation(model: torch.nn.Module, implementation: str) -> torch.nn.Module:
    for layer in model.model.layers:
        layer.memory_implementation = implementation
    return model


def loss_and_grads(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    output = model(ids, labels=ids)
    output.loss.backward()
    return output.logits.detach(), [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def compare_training(name: str, kernels: torch.nn.Module, reference: torch.nn.Module, ids: torch.Tensor) -> str:
    logits, grads = loss_and_grads(kernels, ids)
    expected_logits, expected_grads = loss_and_grads(reference, ids)
    worst = max(relative_error(logits, expected_logits), *map(relative_error, grads, expected_grads))
    limit = 10 * TOLERANCE[logits.dtype]
    return f"{'PASS' if worst <= limit else 'FAIL'} {name}: worst relative error {worst:.2e} (limit {limit:.0e})"


def check_hope(device: str, small: bool, dtype: torch.dtype, length: int, **overrides) -> str:
    reference = with_implementation(hope_model(device, dtype, small, **overrides), "chunk").train()
    kernels = with_implementation(copy.deepcopy(reference), "triton")
    ids = torch.randint(0, 256, (2, length), device=device)
    suffix = f", memory_recompute_chunks={overrides['memory_recompute_chunks']}" if overrides else ""
    return compare_training(f"HOPE forward+backward, {dtype}, {length} tokens{suffix}", kernels, reference, ids)


def check_hope_generate(device: str, small: bool) -> str:
    reference = with_implementation(hope_model(device, torch.float32, small), "chunk").eval()
    kernels = with_implementation(copy.deepcopy(reference), "triton")
    prompt = torch.randint(0, 256, (2, 40), device=device)
    settings = {"max_new_tokens": 16, "do_sample": False, "pad_token_id": 0}
    scores = [
        torch.stack(model.generate(prompt, output_scores=True, return_dict_in_generate=True, **settings).scores)
        for model in (kernels, reference)
    ]
    error = relative_error(*scores)
    return f"{'PASS' if error <= TOLERANCE[torch.float32] * 10 else 'FAIL'} HOPE generate: scores {error:.2e}"


def retrofitted_llama(device: str, small: bool) -> torch.nn.Module:
    width = 64 if small else 512
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    model = hf_hope.retrofit(LlamaForCausalLM(config), hf_hope.CMSConfig.from_periods([4, 1]))
    return model.to(device=device, dtype=torch.bfloat16)


def check_retrofitted(device: str, small: bool) -> str:
    model = retrofitted_llama(device, small).train()
    ids = torch.randint(0, 256, (2, 128), device=device)
    logits, grads = loss_and_grads(model, ids)
    finite = bool(torch.isfinite(logits).all()) and all(bool(torch.isfinite(grad).all()) for grad in grads)
    tokens = model.eval().generate(ids[:, :16], max_new_tokens=8, do_sample=False, pad_token_id=0)
    ok = finite and tokens.shape == (2, 24)
    return f"{'PASS' if ok else 'FAIL'} retrofitted Llama bf16 forward+backward+generate: finite={finite}"


def check_clock(device: str, small: bool) -> str:
    model = retrofitted_llama(device, small).float().train()
    twin = copy.deepcopy(model)
    ids = torch.randint(0, 256, (2, 64), device=device)
    clocks = {"triton": LevelClock(model, implementation="triton"), "torch": LevelClock(twin, implementation="torch")}
    worst = 0.0
    for _ in range(4):
        grads = {}
        for (name, clock), net in zip(clocks.items(), (model, twin), strict=True):
            net.zero_grad(set_to_none=True)
            net(ids, labels=ids).loss.backward()
            clock.tick()
            grads[name] = [p.grad for p in net.parameters() if p.grad is not None]
        worst = max([worst, *map(relative_error, grads["triton"], grads["torch"])])
    return f"{'PASS' if worst <= TOLERANCE[torch.float32] else 'FAIL'} level clock accumulate: {worst:.2e}"


def guarded(check: Callable[[], str], name: str) -> str:
    try:
        return check()
    except Exception as error:  # a failing check is reported and the others still run
        return f"FAIL {name}: {type(error).__name__}: {error}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for the dry run")
    device = parser.parse_args().device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device: run with --device cpu (and TRITON_INTERPRET=1) for the dry run.")
    small = device == "cpu"
    length = 64 if small else 2048
    checks = {
        "HOPE float32": lambda: check_hope(device, small, torch.float32, length),
        "HOPE bfloat16": lambda: check_hope(device, small, torch.bfloat16, length),
        "HOPE recompute": lambda: check_hope(device, small, torch.float32, length, memory_recompute_chunks=2),
        "HOPE generate": lambda: check_hope_generate(device, small),
        "retrofitted Llama": lambda: check_retrofitted(device, small),
        "level clock": lambda: check_clock(device, small),
    }
    lines = [guarded(check, name) for name, check in checks.items()]
    for line in lines:
        print(line, flush=True)
    sys.exit(0 if all(line.startswith("PASS") for line in lines) else 1)


if __name__ == "__main__":
    main()
