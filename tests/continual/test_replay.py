"""Experience replay (`replay`, `cms+replay`): batch composition, the reservoir, budgets, and resume."""

import json
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM, default_data_collator

from hf_hope.clock.callback import LevelClockCallback
from hf_hope.continual import STRATEGY_REGISTRY, ClassificationSettings, ContinualSettings, get_strategy, run_continual
from hf_hope.continual.blocks import LanguageModellingStream
from hf_hope.continual.strategies.replay import ReplayStrategy, replay_count, reservoir_sample
from hf_hope.data import intent_names, load_clinc, load_domains
from hf_hope.modeling import parameter_levels

from .test_continual_runner import CountTrainings, char_ids, factory, settings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    return load_domains(excerpts=True, cache_dir=str(tmp_path_factory.mktemp("data")))


def stream_of(domains, run_settings: ContinualSettings) -> LanguageModellingStream:
    return LanguageModellingStream(
        list(domains.items()), char_ids, run_settings.block_size, run_settings.batch_size, 4, 8
    )


def rows(dataset) -> set[tuple[int, ...]]:
    return {tuple(dataset[index]["input_ids"].tolist()) for index in range(len(dataset))}


@pytest.mark.parametrize(("batch_size", "fraction", "expected"), [(8, 0.25, 3), (2, 0.25, 1), (4, 0.5, 4), (1, 0.1, 1)])
def test_replayed_items_are_about_the_replay_fraction_of_every_batch(batch_size, fraction, expected):
    assert replay_count(batch_size, fraction) == expected


def test_the_reservoir_is_bounded_uniform_and_deterministic_in_the_seed():
    buffer = reservoir_sample(1000, 64, seed=3)
    assert len(buffer) == len(set(buffer)) == 64 and all(0 <= position < 1000 for position in buffer)
    assert buffer == reservoir_sample(1000, 64, seed=3)
    assert buffer != reservoir_sample(1000, 64, seed=4)
    assert reservoir_sample(10, 64, seed=3) == list(range(10))  # small enough: everything is kept
    # Algorithm R with one seed: a longer stream's reservoir continues the shorter one's (an evicted item stays out).
    assert {position for position in reservoir_sample(2000, 64, seed=3) if position < 1000} <= set(buffer)
    counts = torch.zeros(100)
    for seed in range(400):
        counts[reservoir_sample(100, 10, seed)] += 1
    assert counts.min() > 15 and counts.max() < 70  # each position is kept about 40 times in 400


def test_every_step_holds_batch_size_new_items_and_n_replay_earlier_ones(domains):
    run_settings = settings("replay", steps_per_task=5, batch_size=3, replay_fraction=0.4, replay_buffer_blocks=7)
    stream = stream_of(domains, run_settings)
    strategy = get_strategy("replay")
    units = strategy.training_units(list(domains), run_settings.steps_per_task)
    n_replay = replay_count(3, 0.4)
    assert n_replay == 2

    first = strategy.training_data(stream, units, 0, run_settings)
    default = get_strategy("full").training_data(stream, units, 0, run_settings)
    assert (first.batch_size, first.budget, first.collator) == (default.batch_size, default.budget, default.collator)
    assert rows(first.dataset) == rows(default.dataset)

    for index in range(1, len(units)):
        data = strategy.training_data(stream, units, index, run_settings)
        new, earlier = rows(stream.train_dataset([index])), rows(stream.train_dataset(range(index)))
        assert len(data.dataset) == 5 and data.batch_size == 1
        assert rows(data.task_dataset) == new
        replayed = set()
        for step in range(len(data.dataset)):
            batch = data.collator([data.dataset[step]])["input_ids"]
            assert batch.shape == (3 + n_replay, 32)
            items = [tuple(row.tolist()) for row in batch]
            assert all(item in new for item in items[:3]) and len(set(items[:3])) == 3
            assert all(item in earlier and item not in new for item in items[3:]) and len(set(items[3:])) == 2
            replayed.update(items[3:])
        assert len(replayed) <= 7  # all from the reservoir of at most replay_buffer_blocks items
        assert data.budget == {"train_tokens": 5 * 3 * 32, "replay_tokens": 5 * n_replay * 32}
        again = strategy.training_data(stream, units, index, run_settings)
        assert torch.equal(again.dataset.replay_positions, data.dataset.replay_positions)  # recomputed the same


def test_new_items_run_through_whole_epochs_before_repeating(domains):
    run_settings = settings("replay", batch_size=2)
    stream = stream_of(domains, run_settings)
    size = len(stream.train[1])
    steps = size  # two epochs of new-task items
    units = [replace(unit, steps=steps) for unit in ReplayStrategy().training_units(list(domains), 1)]
    positions = ReplayStrategy().training_data(stream, units, 1, run_settings).dataset.new_positions.flatten()
    assert sorted(positions[:size].tolist()) == sorted(positions[size:].tolist()) == list(range(size))


def test_a_replay_run_reports_its_budget_and_trains_its_first_task_as_full(domains, tmp_path):
    full = run_continual(factory, domains, settings("full"), tmp_path / "full", tokenizer=char_ids)
    results = run_continual(factory, domains, settings("replay"), tmp_path / "replay", tokenizer=char_ids)
    assert results["matrix"][0] == full["matrix"][0]  # the first task has nothing to replay
    assert results["matrix"][1:] != full["matrix"][1:]
    n_replay = replay_count(2, 0.25)
    assert "replay_tokens" not in results["timings"][0]
    assert all(timing["train_tokens"] == 2 * 2 * 32 for timing in results["timings"])
    assert all(timing["replay_tokens"] == 2 * n_replay * 32 for timing in results["timings"][1:])


class RecordBatches(ReplayStrategy):
    """`replay` that records the `input_ids` of every batch Trainer trains on."""

    name = "record-batches"
    batches: list[torch.Tensor] = []

    def training_data(self, stream, units, index, settings):
        data = super().training_data(stream, units, index, settings)
        collator = data.collator or default_data_collator

        def recording(features):
            batch = collator(features)
            self.batches.append(batch["input_ids"])
            return batch

        return replace(data, collator=recording)


def test_the_trainer_trains_on_exactly_the_composed_steps(domains, tmp_path):
    STRATEGY_REGISTRY[RecordBatches.name] = RecordBatches
    try:
        run_settings = settings("record-batches", steps_per_task=3, batch_size=3)
        stream = stream_of(domains, run_settings)
        run_continual(factory, domains, run_settings, tmp_path, tokenizer=char_ids)
    finally:
        del STRATEGY_REGISTRY[RecordBatches.name]
    first, later = RecordBatches.batches[:3], RecordBatches.batches[3:]
    batches = [batch for batch in later if len(batch) == 4]
    assert [len(batch) for batch in first] == [3] * 3 and len(batches) == 3 * (len(domains) - 1)
    assert [len(batch) for batch in later if len(batch) != 4] in ([], [3])  # the DataLoader may prefetch one more
    for index in range(1, len(domains)):
        new, earlier = rows(stream.train_dataset([index])), rows(stream.train_dataset(range(index)))
        for batch in batches[3 * (index - 1) : 3 * index]:
            items = [tuple(row.tolist()) for row in batch]
            assert all(item in new for item in items[:3]) and all(item in earlier for item in items[3:])


@pytest.mark.parametrize("strategy", ["replay", "cms+replay"])
def test_an_interrupted_replay_run_resumes_with_the_same_results(domains, tmp_path, strategy):
    run_settings = settings(strategy)
    reference = run_continual(factory, domains, run_settings, tmp_path / "reference", tokenizer=char_ids)
    run_dir = tmp_path / "interrupted"
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run_continual(factory, domains, run_settings, run_dir, tokenizer=char_ids, callbacks=[CountTrainings(2)])
    assert len(json.loads((run_dir / "progress.json").read_text())["rows"]) == 1
    counter = CountTrainings()
    resumed = run_continual(factory, domains, run_settings, run_dir, tokenizer=char_ids, callbacks=[counter])
    assert counter.started == len(domains) - 1
    assert resumed["matrix"] == reference["matrix"] and resumed["initial"] == reference["initial"]
    assert [timing["replay_tokens"] for timing in resumed["timings"][1:]] == [
        timing["replay_tokens"] for timing in reference["timings"][1:]
    ]


def test_cms_replay_trains_only_the_cms_levels_on_their_clock_and_replays(domains, tmp_path):
    run_settings = settings("cms+replay", steps_per_task=1, cms_periods=[2, 1])  # the slow level never steps
    strategy = get_strategy("cms+replay")
    assert [type(callback) for callback in strategy.callbacks(run_settings)] == [LevelClockCallback]
    model = strategy.prepare(factory(), run_settings)
    cms = get_strategy("cms").prepare(factory(), run_settings)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {name for name, parameter in cms.named_parameters() if parameter.requires_grad}

    results = run_continual(factory, domains, run_settings, tmp_path, tokenizer=char_ids)
    assert all(timing["replay_tokens"] == 1 * 1 * 32 for timing in results["timings"][1:])
    prepared = model.state_dict()
    last = AutoModelForCausalLM.from_pretrained(str(tmp_path / f"task_{len(domains) - 1}")).state_dict()
    changed = {name for name, tensor in last.items() if not torch.equal(tensor, prepared[name])}
    periods = parameter_levels(model)
    assert changed and {periods[name].period for name in changed} == {1}  # the period-1 level only


def test_the_card_names_the_replay_settings():
    section = get_strategy("replay").card_section(settings("replay").to_dict(), "code -> news")
    assert "replays 1 earlier-task items (replay_fraction 0.25)" in section
    assert "reservoir buffer of at most 1024 items" in section
    assert "replay_fraction 0.25" in get_strategy("cms+replay").card_section(settings("cms").to_dict(), "code")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"replay_fraction": 0.0}, r"replay_fraction=0.0 is invalid: it must be a number in \(0, 1\)"),
        ({"replay_fraction": 1}, r"replay_fraction=1 is invalid: it must be a number in \(0, 1\)"),
        ({"replay_fraction": "0.3"}, r"replay_fraction='0.3' is invalid"),
        ({"replay_fraction": float("nan")}, r"replay_fraction=nan is invalid"),
        ({"replay_buffer_blocks": 0}, r"replay_buffer_blocks=0 is invalid: it must be an int >= 1"),
        ({"replay_buffer_blocks": 2.5}, r"replay_buffer_blocks=2.5 is invalid: it must be an int >= 1"),
    ],
)
def test_bad_replay_settings_are_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        settings("replay", **changes)


def test_labelled_tasks_replay_padded_examples_and_count_them(tmp_path_factory, tmp_path):
    tasks = load_clinc(excerpts=True, intents_per_task=5, cache_dir=str(tmp_path_factory.mktemp("data")))
    tasks = [(f"intents_{index}", task) for index, task in enumerate(tasks[:2])]
    run_settings = settings("replay", batch_size=3)
    classification = ClassificationSettings(label_names=intent_names(), max_eval_examples=3)
    results = run_continual(factory, tasks, run_settings, tmp_path, tokenizer=char_ids, classification=classification)
    assert [timing.get("replay_examples") for timing in results["timings"]] == [None, 2 * 1]
    assert [timing["train_examples"] for timing in results["timings"]] == [2 * 3, 2 * 3]
