"""HopeConfig: defaults, Auto registration, serialisation and clear errors on invalid values."""

import pytest
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
    ],
)
def test_invalid_values_name_the_field(overrides, field):
    values = {"vocab_size": 10, "hidden_size": 16, "num_heads": 2} | overrides
    with pytest.raises(ValueError) as error:
        HopeConfig(**values)
    assert field in str(error.value)


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
