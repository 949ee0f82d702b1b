"""The strategy registry: it lists the settings' strategies, and a strategy registered anywhere drives a run."""

import json

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, TrainerCallback

from hf_hope.continual import (
    STRATEGIES,
    STRATEGY_REGISTRY,
    ContinualSettings,
    Strategy,
    get_strategy,
    register_strategy,
    run_continual,
)
from hf_hope.continual.experiment import run_experiment
from hf_hope.data import load_domains

from .test_continual_runner import CountTrainings, char_ids, factory, settings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory):
    domains = load_domains(excerpts=True, cache_dir=str(tmp_path_factory.mktemp("data")))
    return [(name, domains[name]) for name in ("code", "news")]


@pytest.fixture
def register():
    """`register_strategy` for a test's own strategies, which leave the registry when the test ends."""
    before = dict(STRATEGY_REGISTRY)
    yield register_strategy
    STRATEGY_REGISTRY.clear()
    STRATEGY_REGISTRY.update(before)


class RecordTraining(TrainerCallback):
    """Records the class of the optimizer each training run steps (inside accelerate's wrapper)."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.calls.append(f"train with {type(getattr(optimizer, 'optimizer', optimizer)).__name__}")


def head_only_strategy(calls: list[str]) -> type[Strategy]:
    """A strategy that trains only the LM head with plain SGD, recording each hook the runner calls."""

    class HeadOnlyStrategy(Strategy):
        name = "head-only"

        def prepare(self, model, settings):
            calls.append("prepare")
            return freeze_all_but_the_head(model)

        def load(self, model_factory, folder, settings):
            calls.append("load")
            return freeze_all_but_the_head(AutoModelForCausalLM.from_pretrained(str(folder)))

        def callbacks(self, settings):
            return [RecordTraining(calls)]

        def optimizer(self, model, settings):
            trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
            return torch.optim.SGD(trainable, lr=settings.learning_rate)

        def finish_task(self, model, settings, data):
            calls.append("finish_task")
            return model

        def card_section(self, settings, trained_on):
            return f"Only the head learnt {trained_on}."

    return HeadOnlyStrategy


def freeze_all_but_the_head(model: torch.nn.Module) -> torch.nn.Module:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("lm_head."))
    return model


def test_the_registry_lists_the_settings_strategies_in_order():
    assert tuple(STRATEGY_REGISTRY) == STRATEGIES
    assert all(get_strategy(name).name == name for name in STRATEGIES)


@pytest.mark.parametrize(
    ("strategy", "cms_init", "rate"),
    [
        ("full", "units", 1e-4),
        ("replay", "units", 1e-4),
        ("ewc", "units", 1e-4),
        ("joint", "units", 1e-4),
        ("lora", "units", 1e-3),
        ("cms", "units", 1e-3),
        ("cms", "copy", 3e-4),
        ("cms", "lowrank", 1e-3),
        ("cms", "zero", 1e-3),
        ("ffn", "copy", 3e-4),
        ("cms+replay", "units", 1e-3),
    ],
)
def test_settings_without_a_learning_rate_take_the_strategys_default(strategy, cms_init, rate):
    assert ContinualSettings(strategy=strategy, cms_init=cms_init).learning_rate == rate
    assert ContinualSettings(strategy=strategy, cms_init=cms_init, learning_rate=5e-5).learning_rate == 5e-5


def test_an_unknown_strategy_name_is_a_clear_error_listing_the_known_ones():
    known = r"full, lora, cms, ffn, replay, ewc, cms\+replay, joint\."
    with pytest.raises(ValueError, match=f"Unknown strategy 'no-such-strategy': choose one of {known}"):
        get_strategy("no-such-strategy")


def test_a_strategy_needs_a_name_of_its_own(register):
    class Nameless(Strategy):
        pass

    with pytest.raises(ValueError, match="Nameless needs a class attribute `name`"):
        register(Nameless)

    class AnotherFull(Strategy):
        name = "full"

    with pytest.raises(ValueError, match="'full' is already registered \\(FullStrategy\\)"):
        register(AnotherFull)
    assert tuple(STRATEGY_REGISTRY) == STRATEGIES


def test_a_strategy_registered_outside_the_package_drives_a_run_and_its_resume(two_tasks, tmp_path, register):
    calls = []
    register(head_only_strategy(calls))
    run_settings = settings("head-only")

    with pytest.raises(RuntimeError, match="simulated interruption"):
        run_continual(factory, two_tasks, run_settings, tmp_path, tokenizer=char_ids, callbacks=[CountTrainings(2)])
    assert calls == ["prepare", "train with SGD", "finish_task", "train with SGD"]
    calls.clear()
    results = run_continual(factory, two_tasks, run_settings, tmp_path, tokenizer=char_ids)
    assert calls == ["load", "train with SGD", "finish_task"]

    assert results["strategy"] == "head-only" and not results["joint_row_repeated"]
    assert [timing["task"] for timing in results["timings"]] == ["code", "news"]
    assert json.loads((tmp_path / "results.json").read_text())["matrix"] == results["matrix"]
    base = factory().state_dict()
    trained = AutoModelForCausalLM.from_pretrained(str(tmp_path / "task_1")).state_dict()
    changed = {name for name, tensor in trained.items() if not torch.equal(tensor, base[name])}
    assert changed == {"lm_head.weight"}


def test_a_registered_strategy_writes_its_own_model_card_section(two_tasks, tmp_path, register):
    register(head_only_strategy([]))
    run_experiment(
        factory,
        two_tasks,
        [settings("head-only")],
        tmp_path,
        tokenizer=char_ids,
        base_model="tiny-llama",
        data_description="Two excerpt domains.",
    )
    card = ModelCard.load(tmp_path / "head-only" / "task_1" / "README.md")
    assert "Two excerpt domains.\n\nOnly the head learnt code -> news." in card.text
    assert "head-only" in card.data.tags
