"""lm-evaluation-harness scores saved folders through its own command line, loading them with trust_remote_code.

A rolling-loglikelihood (perplexity) task over a local JSON-lines file, so nothing is downloaded; the harness's
word perplexity must equal the one the model itself gives, which shows it loaded the saved weights.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import hf_hope

from ..helpers import tiny_config, tiny_family_model
from .helpers import SENTENCES, tiny_tokenizer

pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow

TASK = "hf_hope_tiny_text"


def save_hope(folder) -> torch.nn.Module:
    tokenizer = tiny_tokenizer()
    config = tiny_config(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id)
    model = hf_hope.HopeForCausalLM(config).eval()
    model.save_pretrained(folder)
    return model


def save_retrofitted(folder) -> torch.nn.Module:
    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig.from_periods([4, 1], init="copy"))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".cms_" in name:
                parameter.add_(0.05 * torch.randn_like(parameter))  # as if trained: the levels must be loaded
    model.save_pretrained(folder)
    return model


def expected_word_perplexity(model: torch.nn.Module) -> float:
    """What the harness computes: every token scored after the BOS prefix, over the whitespace-separated words."""
    tokenizer = tiny_tokenizer()
    total, words = 0.0, 0
    with torch.no_grad():
        for text in SENTENCES:
            ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text).input_ids]])
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
            total += log_probs.gather(1, ids[0, 1:, None]).sum().item()
            words += len(text.split())
    return math.exp(-total / words)


def write_task(folder) -> None:
    folder.mkdir()
    data = folder / "tiny_text.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in SENTENCES))
    (folder / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "output_type: loglikelihood_rolling\n"
        "test_split: test\n"
        'doc_to_text: ""\n'
        'doc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n"
    )


@pytest.mark.parametrize("save", [save_hope, save_retrofitted], ids=["hope", "retrofitted"])
def test_lm_eval_command_line_scores_a_saved_folder(tmp_path, save):
    model = save(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    write_task(tmp_path / "tasks")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    command = [
        sys.executable, "-m", "lm_eval", "run",
        "--model", "hf",
        "--model_args", f"pretrained={tmp_path / 'model'},trust_remote_code=True,dtype=float32",
        "--tasks", TASK,
        "--include_path", str(tmp_path / "tasks"),
        "--device", "cpu",
        "--limit", str(len(SENTENCES)),
        "--output_path", str(tmp_path / "results"),
    ]  # fmt: skip
    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-4000:]
    (results_file,) = (tmp_path / "results").rglob("results_*.json")
    perplexity = json.loads(results_file.read_text())["results"][TASK]["word_perplexity,none"]
    assert math.isfinite(perplexity)
    assert perplexity == pytest.approx(expected_word_perplexity(model), rel=1e-4)
