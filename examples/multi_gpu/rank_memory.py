"""The memory one rank needs to train a retrofitted model, under DDP and FSDP2, for SmolLM2-135M, Llama-3.2-1B and
Llama-3.1-8B with the default CMS adapter (unit copies; and the zero, low-rank and copy inits for comparison).

    python examples/multi_gpu/rank_memory.py [--ranks 2 8] [--dtype_bytes 2]

The models are built on the meta device from their published shapes (nothing is downloaded or allocated) and
retrofitted, so the parameter counts are exact. With P frozen base parameters, A trainable adapter parameters, S
of them in levels with a period above 1 (their gradients wait in the clock's float32 buffer), U the parameters of
the largest FSDP unit (gathered whole while it computes), b bytes per parameter (2 for bf16) and N ranks:

    DDP:   b*P + 4*b*A + 4*S                 (weights, then weight + gradient + AdamW's two moments, then buffers)
    FSDP2: (b*P + 4*b*A + 4*S) / N + b*U     (every term sharded; one unit gathered at a time)

Activations come on top and depend on the batch (gradient checkpointing reduces them).
"""

import argparse

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import hf_hope

# Published shapes: hidden, FFN width, layers, attention heads, key/value heads, vocabulary, tied embeddings.
SHAPES = {
    "SmolLM2-135M": (576, 1536, 30, 9, 3, 49152, True),
    "Llama-3.2-1B": (2048, 8192, 16, 32, 8, 128256, True),
    "Llama-3.1-8B": (4096, 14336, 32, 32, 8, 128256, False),
}
FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "tie_word_embeddings",
)
MODELS = {name: LlamaConfig(**dict(zip(FIELDS, shape, strict=True))) for name, shape in SHAPES.items()}
ADAPTERS = {
    "default": hf_hope.CMSConfig(),
    "zero w128": hf_hope.CMSConfig(init="zero"),
    "lowrank r8": hf_hope.CMSConfig(init="lowrank"),
    "copy init": hf_hope.CMSConfig(init="copy"),
}


def counts(config: LlamaConfig, adapter: hf_hope.CMSConfig) -> dict[str, int]:
    """P, A, S and U (see the module docstring) of `config` retrofitted with `adapter`, counted on the meta device."""
    with torch.device("meta"):
        model = hf_hope.retrofit(AutoModelForCausalLM.from_config(config), adapter)
    clock = hf_hope.LevelClock(model)
    trainable = sum(level.numel() for level in clock.levels)
    layers = list(model.model.layers)
    in_layers = {id(parameter) for layer in layers for parameter in layer.parameters()}
    root = sum(parameter.numel() for parameter in model.parameters() if id(parameter) not in in_layers)
    return {
        "P": sum(parameter.numel() for parameter in model.parameters()) - trainable,
        "A": trainable,
        "S": sum(level.numel() for level in clock.levels if level.accumulates),
        "U": max(root, max(sum(parameter.numel() for parameter in layer.parameters()) for layer in layers)),
    }


def gib(value: float) -> str:
    return f"{value / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--dtype_bytes", type=int, default=2, help="bytes per weight: 2 for bf16, 4 for float32")
    arguments = parser.parse_args()
    b = arguments.dtype_bytes
    fsdp_columns = " | ".join(f"FSDP2 x{n} GiB" for n in arguments.ranks)
    print(f"| model | adapter | P | A (% of P) | S | DDP GiB | {fsdp_columns} |")
    print("|---|---|---|---|---|---|" + "---|" * len(arguments.ranks))
    for name, config in MODELS.items():
        for adapter_name, adapter in ADAPTERS.items():
            c = counts(config, adapter)
            whole = b * c["P"] + 4 * b * c["A"] + 4 * c["S"]
            sharded = " | ".join(gib(whole / n + b * c["U"]) for n in arguments.ranks)
            print(
                f"| {name} | {adapter_name} | {c['P'] / 1e6:.1f}M | {c['A'] / 1e6:.1f}M ({100 * c['A'] / c['P']:.1f}%) "
                f"| {c['S'] / 1e6:.1f}M | {gib(whole)} | {sharded} |"
            )


if __name__ == "__main__":
    main()
