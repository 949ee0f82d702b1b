"""The one level contract: HOPE's cms_levels, the adapter's CMSConfig, clock patterns and continual settings agree."""

import math

import pytest
from torch import nn

import hf_hope
from hf_hope.clock import LevelClock
from hf_hope.continual import ContinualSettings
from hf_hope.modeling.levels import check_level_spec, checked_tag, period_name

from ..helpers import tiny_config, tiny_family_model

BAD_SCALES = [0, 0.0, -1, math.nan, math.inf, True, "1"]
BAD_PERIODS = [0, -2, 1.5, True, "4"]


def hope_levels(**level):
    return hf_hope.HopeConfig(
        vocab_size=10, hidden_size=16, num_heads=2, cms_levels=[{"intermediate_size": 8, **level}]
    )


def adapter_levels(**level):
    return hf_hope.CMSConfig(levels=[{"period": None}, level])


def clock_levels(**level):
    return LevelClock(nn.Sequential(nn.Linear(2, 2)), levels={r"0\..*": level})


BUILDERS = [hope_levels, adapter_levels, clock_levels]


def test_an_omitted_period_means_every_step_everywhere():
    assert hope_levels().cms_levels[0]["period"] == 1
    assert adapter_levels().levels[1]["period"] == 1
    assert clock_levels().levels[0].period == 1
    assert check_level_spec({}, "") == {"period": 1, "lr_scale": 1.0}


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("lr_scale", BAD_SCALES)
def test_every_level_refuses_the_same_bad_scales(build, lr_scale):
    with pytest.raises(ValueError, match=r"lr_scale=.* is invalid"):
        build(period=2, lr_scale=lr_scale)


@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.parametrize("period", BAD_PERIODS)
def test_every_level_refuses_the_same_bad_periods(build, period):
    with pytest.raises(ValueError, match=r"period=.* is invalid: it must be an int >= 1"):
        build(period=period)


@pytest.mark.parametrize("build", BUILDERS)
def test_every_level_accepts_frozen_and_integer_scales(build):
    build(period=None, lr_scale=2)


def test_continual_settings_follow_the_contract():
    with pytest.raises(ValueError, match=r"cms_lr_scales\[1\]: lr_scale=nan is invalid"):
        ContinualSettings(cms_periods=[4, 1], cms_lr_scales=[1.0, math.nan])
    with pytest.raises(ValueError, match=r"cms_periods\[0\]: period=None is invalid"):
        ContinualSettings(cms_periods=[None, 1])
    assert ContinualSettings(cms_periods=[4, 1], cms_lr_scales=[1, 2]).cms_lr_scales == [1.0, 2.0]


def test_checked_tags_number_levels_from_one():
    assert checked_tag(2, 16, 0.5) == hf_hope.LevelTag(2, 16, 0.5)
    with pytest.raises(ValueError, match="levels are numbered from 1"):
        checked_tag(0, 1)


def test_adapter_levels_from_periods_put_the_frozen_ffn_first():
    config = hf_hope.CMSConfig.from_periods([16, 1], [0.5, 1.0], init="copy")
    assert [(level["period"], level["lr_scale"]) for level in config.levels] == [(None, 1.0), (16, 0.5), (1, 1.0)]
    assert config.init == "copy"


def test_logs_name_levels_by_period_for_hope_and_retrofits_alike():
    assert period_name(16) == "p16" and period_name(None) == "frozen"
    hope = hf_hope.HopeForCausalLM(tiny_config())  # CMS periods 1 and 4
    retrofitted = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig.from_periods([4, 1]))
    for model in (hope, retrofitted):
        clock = LevelClock(model)
        norms = {index: 1.0 for index in range(len(clock.levels))}
        report = clock.by_period(norms)
        assert set(report) == {"p1", "p4"}
        period_one = [level for level in clock.levels if level.period == 1]  # untagged and the fast CMS level
        assert report["p1"] == (0, pytest.approx(math.sqrt(len(period_one))))
