"""HopeConfig: defaults, Auto registration, serialisation and clear errors on invalid values."""

import json

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig

import hf_hope
from hf_hope import HopeConfig


def test_for_model_through_auto_config():
    config = AutoConfig.for_model("hope", vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_heads=4)
    assert isinstance(config, HopeConfig)
    assert config.head_dim == 64
    assert [level["period"] for level in config.cms_levels] == [1, 8]
    assert config.memory_lr_max == pytest.approx(0.25 / config.chunk_size)


def test_round_trip_through_dict_and_json(tmp_path):
    config = HopeConfig(
        vocab_size=10,
        hidden_size=16,
        num_heads=2,
        cms_levels=[{"intermediate_size": 8, "period": None}, {"intermediate_size": 4, "period": 3, "lr_scale": 0.5}],
        cms_variant="independent",
        self_modifying=False,
    )
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert loaded.to_diff_dict() | {"_name_or_path": ""} == config.to_diff_dict() | {"_name_or_path": ""}
    assert loaded.cms_levels[0] == {"intermediate_size": 8, "period": None, "lr_scale": 1.0}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"hidden_size": 30, "num_heads": 4}, "hidden_size=30"),
        ({"chunk_size": 0}, "chunk_size=0"),
        ({"conv_size": 0}, "conv_size=0"),
        ({"num_heads": 0}, "num_heads=0"),
        ({"memory_expansion": 0}, "memory_expansion=0"),
        ({"memory_lr_max": 2.0}, "memory_lr_max=2.0"),
        ({"rms_norm_eps": 0.0}, "rms_norm_eps=0.0"),
        ({"cms_variant": "parallel"}, "cms_variant='parallel'"),
        ({"memory_implementation": "fast"}, "memory_implementation='fast'"),
        ({"cms_levels": []}, "cms_levels=[]"),
        ({"cms_levels": [{"intermediate_size": 8, "period": 0}]}, "cms_levels[0].period=0"),
        ({"cms_levels": [{"intermediate_size": 0, "period": 1}]}, "cms_levels[0].intermediate_size=0"),
        ({"cms_levels": [{"period": 1}]}, "cms_levels[0] has no intermediate_size"),
        ({"cms_levels": [{"intermediate_size": 8, "every": 2}]}, "cms_levels[0] has unknown keys"),
        ({"cms_levels": [{"intermediate_size": 8, "lr_scale": -1}]}, "cms_levels[0].lr_scale=-1"),
        ({"cms_levels": [{"intermediate_size": 8, "lr_scale": float("nan")}]}, "cms_levels[0].lr_scale=nan"),
        ({"cms_levels": [{"intermediate_size": 8, "lr_scale": float("inf")}]}, "cms_levels[0].lr_scale=inf"),
        ({"cms_levels": [{"intermediate_size": 8, "lr_scale": True}]}, "cms_levels[0].lr_scale=True"),
        ({"rms_norm_eps": float("nan")}, "rms_norm_eps=nan"),
        ({"rms_norm_eps": float("inf")}, "rms_norm_eps=inf"),
        ({"initializer_range": float("inf")}, "initializer_range=inf"),
        ({"initializer_range": float("nan")}, "initializer_range=nan"),
        ({"initializer_range": -0.1}, "initializer_range=-0.1"),
        ({"memory_lr_max": float("nan")}, "memory_lr_max=nan"),
        ({"memory_lr_max": float("inf")}, "memory_lr_max=inf"),
        ({"pad_token_id": 10}, "pad_token_id=10 is outside the vocabulary"),
        ({"pad_token_id": -1}, "pad_token_id=-1 is outside the vocabulary"),
    ],
)
def test_invalid_values_name_the_field(overrides, field):
    values = {"vocab_size": 10, "hidden_size": 16, "num_heads": 2} | overrides
    with pytest.raises(ValueError) as error:
        HopeConfig(**values)
    assert field in str(error.value)


@pytest.mark.parametrize("field", ["rms_norm_eps", "initializer_range", "memory_lr_max"])
def test_a_bool_is_not_a_number(field):
    # transformers' strict dataclass refuses it before HopeConfig's own checks, which refuse it too.
    with pytest.raises((TypeError, ValueError, StrictDataclassError), match=field):
        HopeConfig(vocab_size=10, hidden_size=16, num_heads=2, **{field: True})


def test_a_pad_token_id_inside_the_vocabulary_is_accepted():
    assert HopeConfig(vocab_size=10, hidden_size=16, num_heads=2, pad_token_id=9).pad_token_id == 9


def test_package_exports_the_model():
    assert hf_hope.HopeConfig.model_type == "hope"
    assert hf_hope.__version__


@pytest.mark.parametrize("implementation", ["auto", "triton", "chunk", "recurrent"])
def test_memory_implementation_round_trips(tmp_path, implementation):
    assert HopeConfig(vocab_size=10, hidden_size=16, num_heads=2).memory_implementation == "auto"
    # Checkpoints saved before "auto" existed say "chunk"; they load as saved and keep the torch path.
    HopeConfig(vocab_size=10, hidden_size=16, num_heads=2, memory_implementation=implementation).save_pretrained(
        tmp_path
    )
    assert AutoConfig.from_pretrained(tmp_path).memory_implementation == implementation


# A ConfigTester-like check (transformers' tests/test_configuration_common.py) of what generic code relies on.
COMMON_PROPERTIES = {"hidden_size": 48, "num_attention_heads": 4, "num_hidden_layers": 3, "vocab_size": 50}
TESTER_INPUTS = {"vocab_size": 50, "hidden_size": 48, "num_heads": 4, "num_hidden_layers": 3, "chunk_size": 8}


def test_common_properties_read_write_and_init():
    config = HopeConfig(**TESTER_INPUTS)
    for name, value in COMMON_PROPERTIES.items():
        assert getattr(config, name) == value, name
    config.num_attention_heads = 6
    assert config.num_heads == 6 and config.num_attention_heads == 6
    for name, value in COMMON_PROPERTIES.items():
        assert getattr(HopeConfig(**{name: value}), name) == value, name


def test_num_attention_heads_kwarg_is_applied_before_head_dim_is_derived():
    config = HopeConfig(hidden_size=64, num_attention_heads=4)
    assert (config.num_heads, config.head_dim) == (4, 16)
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        HopeConfig(hidden_size=64, num_attention_heads=3)


def test_json_string_file_and_pretrained_round_trips(tmp_path):
    config = HopeConfig(**TESTER_INPUTS)
    as_json = json.loads(config.to_json_string())
    assert all(as_json[key] == value for key, value in TESTER_INPUTS.items())
    assert "num_attention_heads" not in as_json
    config.to_json_file(tmp_path / "config.json")
    assert HopeConfig.from_json_file(tmp_path / "config.json").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "saved")
    assert HopeConfig.from_pretrained(tmp_path / "saved").to_dict() == config.to_dict()
    config.save_pretrained(tmp_path / "outer" / "sub")
    assert HopeConfig.from_pretrained(tmp_path / "outer", subfolder="sub").to_dict() == config.to_dict()


def test_num_labels_defaults_and_generic_arguments():
    config = HopeConfig(**TESTER_INPUTS, num_labels=5)
    assert len(config.id2label) == len(config.label2id) == 5
    config.num_labels = 3
    assert len(config.id2label) == len(config.label2id) == 3
    assert HopeConfig() is not None
    generic = {"return_dict": False, "output_hidden_states": True, "tie_word_embeddings": True, "dtype": "float16"}
    config = HopeConfig(**TESTER_INPUTS, **generic, architectures=["HopeForCausalLM"], bos_token_id=3)
    assert (config.return_dict, config.output_hidden_states, config.tie_word_embeddings) == (False, True, True)
    assert config.dtype == torch.float16 and config.architectures == ["HopeForCausalLM"]
    assert config.bos_token_id == 3
