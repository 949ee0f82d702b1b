"""Damaged and hostile files (truncated, random bytes, another architecture's config, wrong types, another model's
clock state, not a GGUF): an error naming the file, and the folder unchanged.
"""

import json
import os

import pytest
from huggingface_hub.errors import StrictDataclassError

import hf_hope
from hf_hope.clock.online_learner import LEARNER_STATE_NAME, OnlineLearner

from ..helpers import tiny_config, tiny_family_model
from .fault_helpers import LEVELS, folder_bytes, half, random_bytes


@pytest.mark.parametrize("damage", [half, random_bytes, lambda data: b""], ids=["truncated", "random", "empty"])
@pytest.mark.parametrize("kind", ["hope", "retrofitted"])
def test_a_damaged_model_safetensors_is_refused_naming_the_folder(tmp_path, kind, damage):
    from transformers import AutoModelForCausalLM

    from ..helpers import tiny_model

    model = tiny_model() if kind == "hope" else hf_hope.retrofit(tiny_family_model("llama"))
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    before = folder_bytes(tmp_path)
    with pytest.raises(ValueError, match=rf"The weights in {tmp_path} cannot be read .*damaged or truncated"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    assert folder_bytes(tmp_path) == before


def test_a_config_of_another_architecture_or_of_wrong_types_is_refused(tmp_path):
    from transformers import AutoModelForCausalLM

    from ..helpers import tiny_model

    tiny_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match="config.json is of model type 'llama', not 'hope'"):
        hf_hope.HopeForCausalLM.from_pretrained(tmp_path)
    for field, value in [("hidden_size", "wide"), ("num_heads", 2.5), ("rms_norm_eps", float("inf"))]:
        (tmp_path / "config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises((StrictDataclassError, ValueError), match=field):  # transformers' own checks, or ours
            AutoModelForCausalLM.from_pretrained(tmp_path)


def test_damaged_clock_and_learner_states_are_refused_naming_the_file(tmp_path):
    from hf_hope.clock.core import LevelClock
    from hf_hope.clock.state_file import load_clock_state, save_clock_state

    model = hf_hope.HopeForCausalLM(tiny_config())
    save_clock_state(LevelClock(model), tmp_path / "clock.safetensors")
    data = (tmp_path / "clock.safetensors").read_bytes()
    for damage in (half, random_bytes):
        (tmp_path / "damaged.safetensors").write_bytes(damage(data))
        with pytest.raises(ValueError, match=rf"{tmp_path / 'damaged.safetensors'} is not a level clock state"):
            load_clock_state(LevelClock(model), tmp_path / "damaged.safetensors")
    other = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS))
    with pytest.raises(ValueError, match="saved for other levels or parameters"):
        load_clock_state(LevelClock(other), tmp_path / "clock.safetensors")

    learner = OnlineLearner(model, chunk_size=16, context_size=8)
    learner.save(tmp_path / "learner")
    state = tmp_path / "learner" / LEARNER_STATE_NAME
    for damage in (half, random_bytes):
        state.write_bytes(damage(state.read_bytes()))
        with pytest.raises(ValueError, match=rf"{state} cannot be read .*damaged or truncated"):
            OnlineLearner(model, chunk_size=16, context_size=8).load(tmp_path / "learner")


def test_a_file_that_is_not_gguf_is_refused_and_nothing_is_written(tmp_path):
    pytest.importorskip("gguf")
    (tmp_path / "model.gguf").write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'model.gguf'} does not start with the GGUF magic bytes"):
        hf_hope.convert_gguf(tmp_path / "model.gguf", tmp_path / "out")
    assert [path.name for path in tmp_path.iterdir()] == ["model.gguf"]
