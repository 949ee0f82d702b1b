"""Continual fine-tuning: each strategy end to end on the excerpt domains, the run folder, errors, and resume."""

import csv
import json
import math
import warnings
from dataclasses import replace

import pytest
import torch
from datasets import Dataset, DatasetDict
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import HfArgumentParser, PreTrainedTokenizerFast, TrainerCallback

from hf_hope.continual import (
    STRATEGIES,
    ContinualSettings,
    build_optimizer,
    group_blocks,
    prepare_model,
    run_continual,
    strategy_callbacks,
    tokenize_texts,
)
from hf_hope.data import load_domains
from hf_hope.modeling import parameter_levels

from ..helpers import tiny_family_model


def char_ids(text: str) -> list[int]:
    """A byte-level stand-in tokenizer for the tiny Llama's 128-token vocabulary."""
    return [min(ord(character), 127) for character in text]


def settings(strategy: str, **changes) -> ContinualSettings:
    values = {
        "strategy": strategy,
        "steps_per_task": 2,
        "batch_size": 2,
        "block_size": 32,
        "learning_rate": 1e-2,
        "eval_batch_size": 8,
        "max_eval_blocks": 4,
        "lora_rank": 4,
        "cms_periods": [2, 1],
        "cms_width": 16,
        "use_cpu": True,
    }
    return ContinualSettings(**{**values, **changes})


def factory() -> torch.nn.Module:
    return tiny_family_model("llama")


class CountTrainings(TrainerCallback):
    def __init__(self, fail_at: int | None = None) -> None:
        self.started, self.fail_at = 0, fail_at

    def on_train_begin(self, args, state, control, **kwargs):
        self.started += 1

    def on_train_end(self, args, state, control, **kwargs):
        if self.started == self.fail_at:
            raise RuntimeError("simulated interruption")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    return load_domains(excerpts=True, cache_dir=str(tmp_path_factory.mktemp("data")))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_runs_end_to_end_and_writes_the_run_folder(domains, tmp_path, strategy):
    results = run_continual(factory, domains, settings(strategy), tmp_path, tokenizer=char_ids)

    names = list(domains)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["strategy"] == strategy and saved["tasks"] == names
    matrix = saved["matrix"]
    assert len(matrix) == len(names) and all(len(row) == len(names) for row in matrix)
    assert all(math.isfinite(value) and value > 1 for row in matrix for value in row)
    assert len(saved["initial"]) == len(names)
    assert saved["summary"]["final_average"] == pytest.approx(sum(matrix[-1]) / len(names))
    trained_units = 1 if strategy == "joint" else len(names)
    assert len(saved["timings"]) == trained_units
    assert all(
        timing["train_tokens"] == 2 * 2 * 32 * (len(names) if strategy == "joint" else 1) for timing in saved["timings"]
    )
    assert matrix != [saved["initial"]] * len(names)  # training changed the model
    if strategy == "joint":
        assert saved["joint_row_repeated"] and all(row == matrix[0] for row in matrix)
    with open(tmp_path / "matrix.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["after_task", *names]
    assert [[float(value) for value in row[1:]] for row in rows[1:]] == matrix
    assert sorted(path.name for path in tmp_path.glob("task_*")) == [f"task_{i}" for i in range(trained_units)]


def test_what_each_strategy_trains():
    def trainable(model):
        return {name for name, parameter in model.named_parameters() if parameter.requires_grad}

    full = prepare_model(factory(), settings("full"))
    assert trainable(full) == {name for name, _ in full.named_parameters()}
    lora = prepare_model(factory(), settings("lora"))
    assert trainable(lora) and all("lora_" in name and "self_attn" in name for name in trainable(lora))
    assert {name.split(".")[-4] for name in trainable(lora)} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    cms = prepare_model(factory(), settings("cms"))
    assert trainable(cms) and all(".cms_levels." in name for name in trainable(cms))
    assert cms.config.model_type == "llama_cms"
    ffn = prepare_model(factory(), settings("ffn"))  # the same parameters as cms, every level at period 1
    assert trainable(ffn) == trainable(cms)
    assert {tag.period for name, tag in parameter_levels(ffn).items() if name in trainable(ffn)} == {1}
    assert {tag.period for name, tag in parameter_levels(cms).items() if name in trainable(cms)} == {2, 1}
    assert strategy_callbacks(settings("ffn")) == [] and len(strategy_callbacks(settings("cms"))) == 1


def test_cms_learning_rate_scales_give_each_level_its_own_param_group():
    cms_settings = settings("cms", learning_rate=1e-3, cms_lr_scales=[0.25, 1.0])
    model = prepare_model(factory(), cms_settings)
    optimizer = build_optimizer(model, cms_settings)
    lr_of = {id(parameter): group["lr"] for group in optimizer.param_groups for parameter in group["params"]}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            expected = 2.5e-4 if ".cms_levels.0." in name else 1e-3
            assert lr_of[id(parameter)] == pytest.approx(expected), name
    assert len(lr_of) == sum(parameter.requires_grad for parameter in model.parameters())
    assert build_optimizer(model, settings("cms")) is None  # no scales: Trainer's own AdamW


def test_cms_trains_copies_of_some_of_the_pretrained_ffns_units_by_default():
    model = prepare_model(factory(), settings("cms"))
    base = factory()
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trained and all(".cms_levels." in name or ".cms_mixing." in name for name in trained)
    level = model.model.layers[0].mlp.cms_levels[1].mlp
    torch.testing.assert_close(level.ffn.up_proj.weight, base.model.layers[0].mlp.up_proj.weight[level.units])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cms_init": "random"}, "cms_init='random' is unknown"),
        ({"cms_lr_scales": [1.0]}, "one positive scale per CMS period"),
        ({"cms_lr_scales": [0.0, 1.0]}, r"cms_lr_scales\[0\]: lr_scale=0.0 is invalid: it must be > 0"),
        ({"learning_rate": 0.0}, r"learning_rate=0.0 is invalid: it must be a finite number > 0"),
        ({"learning_rate": float("nan")}, r"learning_rate=nan is invalid"),
        ({"weight_decay": -0.1}, r"weight_decay=-0.1 is invalid: it must be a finite number >= 0"),
        ({"lr_scheduler_type": "cosinus"}, r"lr_scheduler_type='cosinus' is unknown: choose one of linear, cosine"),
        ({"seed": -1}, r"seed=-1 is invalid: it must be an int >= 0"),
        ({"block_size": 1}, r"block_size=1 is invalid: it must be an int >= 2 \(a block needs at least 2 tokens\)"),
        ({"steps_per_task": "ten"}, r"steps_per_task='ten' is invalid: it must be an int >= 1"),
    ],
)
def test_bad_settings_are_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        settings("cms", **changes)


def test_an_unknown_strategy_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown strategy 'no-such-strategy'.*full, lora, cms, ffn, replay, ewc"):
        ContinualSettings(strategy="no-such-strategy")


def test_a_task_without_validation_examples_is_a_clear_error(domains, tmp_path):
    empty = DatasetDict(train=domains["news"]["train"], validation=Dataset.from_dict({"id": [], "text": []}))
    tasks = [("code", domains["code"]), ("news", empty)]
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="'news'.*'validation' split has 0 examples"):
        run_continual(factory, tasks, settings("full"), run_dir, tokenizer=char_ids)
    assert not run_dir.exists()  # refused before anything was written


def test_a_task_too_small_for_one_batch_is_refused_before_anything_is_written(domains, tmp_path):
    tiny = DatasetDict(train=Dataset.from_dict({"text": ["x" * 40]}), validation=domains["news"]["validation"])
    tasks = [("code", domains["code"]), ("tiny", tiny)]
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="'tiny' has 1 training blocks of 32 tokens, fewer than one batch of 2"):
        run_continual(factory, tasks, settings("full"), run_dir, tokenizer=char_ids)
    assert not run_dir.exists()


RESUMED_SETTINGS = {
    "full": settings("full"),
    "lora": settings("lora"),
    "cms": settings("cms"),
    "cms-consolidate": settings("cms", cms_init="zero", cms_consolidate=True),
    "cms-lowrank-consolidate": settings("cms", cms_init="lowrank", cms_rank=2, cms_consolidate=True),
    "cms-units": settings("cms", cms_init="units", cms_units=0.25),
}


@pytest.mark.parametrize("name", list(RESUMED_SETTINGS))
def test_an_interrupted_run_resumes_without_retraining_and_gives_the_same_matrix(domains, tmp_path, name):
    run_settings = RESUMED_SETTINGS[name]
    reference = run_continual(factory, domains, run_settings, tmp_path / "reference", tokenizer=char_ids)

    run_dir = tmp_path / "interrupted"
    interrupter = CountTrainings(fail_at=2)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run_continual(factory, domains, run_settings, run_dir, tokenizer=char_ids, callbacks=[interrupter])
    assert len(json.loads((run_dir / "progress.json").read_text())["rows"]) == 1
    assert not (run_dir / "results.json").exists()

    counter = CountTrainings()
    resumed = run_continual(factory, domains, run_settings, run_dir, tokenizer=char_ids, callbacks=[counter])
    assert counter.started == len(domains) - 1  # the finished first task is not trained again
    assert resumed["initial"] == reference["initial"]
    assert resumed["matrix"] == reference["matrix"]  # bitwise: same seeds, weights reloaded exactly

    again = CountTrainings()
    finished = run_continual(factory, domains, run_settings, run_dir, tokenizer=char_ids, callbacks=[again])
    assert finished == resumed
    assert again.started == 0  # a finished run only reads its results
    with pytest.raises(ValueError, match="other settings.*learning_rate"):
        run_continual(factory, domains, replace(run_settings, learning_rate=1e-3), run_dir, tokenizer=char_ids)


def test_consolidation_folds_each_task_into_the_slow_level(domains, tmp_path):
    run_continual(
        factory, domains, settings("cms", cms_init="zero", cms_consolidate=True), tmp_path, tokenizer=char_ids
    )
    for index in range(len(domains)):
        adapter = json.loads((tmp_path / f"task_{index}" / "config.json").read_text())["cms_adapter"]
        slow, fast = adapter["levels"][1:]
        assert (slow["intermediate_size"], fast["intermediate_size"]) == (16 * (index + 2), 16)
    with pytest.raises(ValueError, match="cms_consolidate needs at least two cms_periods"):
        settings("cms", cms_init="zero", cms_consolidate=True, cms_periods=[1])


def test_lowrank_consolidation_stacks_each_task_into_the_slow_level(domains, tmp_path):
    run_settings = settings("cms", cms_init="lowrank", cms_rank=2, cms_consolidate=True)
    run_continual(factory, domains, run_settings, tmp_path, tokenizer=char_ids)
    for index in range(len(domains)):
        adapter = json.loads((tmp_path / f"task_{index}" / "config.json").read_text())["cms_adapter"]
        assert [level["rank"] for level in adapter["levels"]] == [None, 2 * (index + 2), 2]


def test_a_run_saved_before_a_setting_existed_resumes_under_that_settings_default(domains, tmp_path):
    run_settings = settings("cms", cms_init="lowrank")
    results = run_continual(factory, domains, run_settings, tmp_path, tokenizer=char_ids)
    progress = json.loads((tmp_path / "progress.json").read_text())
    del progress["settings"]["cms_rank"]  # as a run saved before cms_rank was added
    (tmp_path / "progress.json").write_text(json.dumps(progress))
    counter = CountTrainings()
    assert run_continual(factory, domains, run_settings, tmp_path, tokenizer=char_ids, callbacks=[counter]) == results
    assert counter.started == 0
    with pytest.raises(ValueError, match="other settings.*cms_rank: 8 -> 4"):
        run_continual(factory, domains, replace(run_settings, cms_rank=4), tmp_path, tokenizer=char_ids)


def test_another_strategys_settings_do_not_tie_a_run_folder(domains, tmp_path):
    """A full fine-tuning run saved when the CMS level type's default was another resumes without retraining."""
    run_settings = settings("full")
    results = run_continual(factory, domains, run_settings, tmp_path, tokenizer=char_ids)
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert not any(key.startswith(("cms_", "lora_", "replay_", "ewc_")) for key in progress["settings"])
    progress["settings"].update(cms_init="copy", lora_rank=4)  # as saved by a version that recorded every setting
    (tmp_path / "progress.json").write_text(json.dumps(progress))
    counter = CountTrainings()
    changed = replace(run_settings, cms_init="zero", lora_rank=16, replay_fraction=0.5)
    assert run_continual(factory, domains, changed, tmp_path, tokenizer=char_ids, callbacks=[counter]) == results
    assert counter.started == 0
    with pytest.raises(ValueError, match="other settings.*learning_rate"):
        run_continual(factory, domains, replace(run_settings, learning_rate=1e-3), tmp_path, tokenizer=char_ids)


def test_texts_become_blocks_with_a_transformers_tokenizer():
    vocabulary = {"[UNK]": 0, "</s>": 1, **{character: 2 + index for index, character in enumerate("abc")}}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>")

    ids = tokenize_texts(["abc", "cab"], tokenizer)
    assert ids == [2, 3, 4, 1, 4, 2, 3, 1]
    assert group_blocks(ids, 3).tolist() == [[2, 3, 4], [1, 4, 2]]
    assert group_blocks(ids, 3, max_blocks=1).tolist() == [[2, 3, 4]]
    assert tokenize_texts(["ab"], char_ids) == [97, 98]


def test_only_the_latest_task_model_is_kept_when_asked(domains, tmp_path, capsys):
    reported = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = run_continual(
            factory,
            domains,
            settings("full", keep_task_models=False, use_cpu=False),  # the device a user gets
            tmp_path,
            tokenizer=char_ids,
            on_evaluation=lambda *report: reported.append(report),
        )
    assert [path.name for path in tmp_path.glob("task_*")] == [f"task_{len(domains) - 1}"]
    names = list(domains)
    assert [label for label, _, _ in reported] == ["before training", *(f"after {name}" for name in names)]
    assert all(metric == "perplexity" and list(scores) == names for _, metric, scores in reported)
    assert [list(scores.values()) for _, _, scores in reported] == [results["initial"], *results["matrix"]]
    assert not [warning for warning in caught if "pin_memory" in str(warning.message)]  # pinned only on a GPU
    errors = capsys.readouterr().err
    assert "Writing model shards" not in errors and "Loading weights" not in errors


def test_settings_parse_from_the_command_line():
    arguments = ["--strategy", "cms", "--cms_periods", "4", "1", "--lora_target_modules", "q_proj", "v_proj"]
    (parsed,) = HfArgumentParser(ContinualSettings).parse_args_into_dataclasses(arguments)
    assert parsed.strategy == "cms" and parsed.cms_periods == [4, 1]
    assert parsed.lora_target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="cms_periods"):
        ContinualSettings(cms_periods=[0])
