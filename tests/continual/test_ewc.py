"""Online EWC (`ewc`): the Fisher against a float64 reference, the penalty, save/load and resume."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional

from hf_hope.continual import run_continual
from hf_hope.continual.blocks import BlockDataset
from hf_hope.continual.strategies import EWCStrategy, TrainingData
from hf_hope.continual.strategies.ewc import FISHER_NAME, empirical_fisher

from ..helpers import relative_error, tiny_family_model
from .test_continual_runner import CountTrainings, char_ids, factory, settings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    from hf_hope.data import load_domains

    return load_domains(excerpts=True, cache_dir=str(tmp_path_factory.mktemp("data")))


def block_data(seed: int, blocks: int = 7) -> TrainingData:
    generator = torch.Generator().manual_seed(seed)
    dataset = BlockDataset(torch.randint(0, 128, (blocks, 12), generator=generator))
    return TrainingData(dataset, None, 2, {}, dataset)


def hand_fisher(model: torch.nn.Module, data: TrainingData, batches: list[list[int]]) -> dict[str, torch.Tensor]:
    """Mean over `batches` of the squared gradient of the mean next-token cross-entropy, in float64."""
    parameters = dict(model.named_parameters())
    fisher = {name: torch.zeros_like(parameter) for name, parameter in parameters.items()}
    for batch in batches:
        ids = torch.stack([data.task_dataset[index]["input_ids"] for index in batch])
        logits = model(input_ids=ids).logits
        loss = functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        for (name, _), grad in zip(
            parameters.items(), torch.autograd.grad(loss, list(parameters.values())), strict=True
        ):
            fisher[name] += grad.square() / len(batches)
    return fisher


def test_the_fisher_is_the_mean_squared_batch_gradient_of_a_float64_reference():
    model = tiny_family_model("llama").double().train()
    data = block_data(seed=1)
    fisher = empirical_fisher(model, data, batch_size=2, num_batches=10, seed=5)  # 7 items: 3 full batches
    assert model.training  # its mode is put back, and no gradient is left behind
    assert all(parameter.grad is None for parameter in model.parameters())

    order = torch.randperm(7, generator=torch.Generator().manual_seed(5)).tolist()
    reference = hand_fisher(model.eval(), data, [order[0:2], order[2:4], order[4:6]])
    assert set(fisher) == set(reference)
    for name, value in fisher.items():
        assert value.dtype == torch.float32
        assert relative_error(value, reference[name]) < 1e-6, name

    first_two = empirical_fisher(model, data, batch_size=2, num_batches=2, seed=5)
    two_reference = hand_fisher(model, data, [order[0:2], order[2:4]])
    assert max(relative_error(first_two[name], two_reference[name]) for name in first_two) < 1e-6


def test_the_penalty_and_its_gradient_match_a_hand_computation():
    model = tiny_family_model("llama").double()
    strategy = EWCStrategy()
    strategy.prepare(model, settings("ewc", ewc_lambda=7.0))
    model.lm_head.requires_grad_(False)  # frozen parameters are not penalised
    trainable = {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert strategy.loss_penalty(model) is None  # no task has finished yet
    strategy.fisher = {name: torch.rand(parameter.shape) for name, parameter in trainable.items()}
    strategy.anchor = {name: parameter.detach() + torch.randn_like(parameter) for name, parameter in trainable.items()}

    penalty = strategy.loss_penalty(model)
    expected = sum(
        (strategy.fisher[name].double() * (parameter.detach() - strategy.anchor[name]) ** 2).sum()
        for name, parameter in trainable.items()
    )
    assert penalty.dtype == torch.float64
    torch.testing.assert_close(penalty, 3.5 * expected, rtol=1e-12, atol=0)
    grads = torch.autograd.grad(penalty, list(trainable.values()))
    for (name, parameter), grad in zip(trainable.items(), grads, strict=True):
        hand = 7.0 * strategy.fisher[name].double() * (parameter.detach() - strategy.anchor[name])
        torch.testing.assert_close(grad, hand, rtol=1e-12, atol=1e-15)


def test_finished_tasks_add_their_fisher_and_move_the_anchor():
    model = tiny_family_model("llama")
    run_settings = settings("ewc", batch_size=2, ewc_fisher_batches=3)
    strategy = EWCStrategy()
    model = strategy.prepare(model, run_settings)
    first, second = block_data(seed=1), block_data(seed=2)
    strategy.finish_task(model, run_settings, first)
    assert strategy.loss_penalty(model).item() == 0  # at the anchor
    with torch.no_grad():
        model.lm_head.weight.add_(0.1)
    assert strategy.loss_penalty(model).item() > 0
    accumulated = dict(strategy.fisher)
    second_fisher = empirical_fisher(model, second, 2, 3, 0)
    strategy.finish_task(model, run_settings, second)
    assert torch.equal(strategy.anchor["lm_head.weight"], model.lm_head.weight)
    assert strategy.loss_penalty(model).item() == 0
    for name, value in strategy.fisher.items():
        torch.testing.assert_close(value, accumulated[name] + second_fisher[name], rtol=0, atol=0)


def test_with_lambda_zero_ewc_trains_exactly_as_full_and_its_first_task_always(domains, tmp_path):
    full = run_continual(factory, domains, settings("full"), tmp_path / "full", tokenizer=char_ids)
    silent = run_continual(factory, domains, settings("ewc", ewc_lambda=0.0), tmp_path / "zero", tokenizer=char_ids)
    assert silent["matrix"] == full["matrix"] and silent["initial"] == full["initial"]
    strong = run_continual(factory, domains, settings("ewc", ewc_lambda=1e4), tmp_path / "ewc", tokenizer=char_ids)
    assert strong["matrix"][0] == full["matrix"][0]  # no penalty on the first task
    assert strong["matrix"][1:] != full["matrix"][1:]
    assert all((tmp_path / "ewc" / f"task_{index}" / FISHER_NAME).is_file() for index in range(len(domains)))


def test_the_fisher_is_saved_and_loaded_back_with_the_model(tmp_path):
    run_settings = settings("ewc", ewc_fisher_batches=2)
    strategy = EWCStrategy()
    model = strategy.prepare(factory(), run_settings)
    strategy.finish_task(model, run_settings, block_data(seed=3))
    strategy.save(model, tmp_path)
    saved = load_file(str(tmp_path / FISHER_NAME))
    assert all(torch.equal(saved[name], value) for name, value in strategy.fisher.items())

    loaded = EWCStrategy()
    model = loaded.load(factory, tmp_path, run_settings)
    assert loaded.ewc_lambda == run_settings.ewc_lambda
    assert set(loaded.fisher) == set(strategy.fisher)
    assert all(torch.equal(loaded.fisher[name], value) for name, value in strategy.fisher.items())
    assert all(torch.equal(loaded.anchor[name], value) for name, value in strategy.anchor.items())
    assert loaded.loss_penalty(model).item() == 0

    save_file({"not.a.parameter": torch.zeros(2), **saved}, str(tmp_path / FISHER_NAME))
    with pytest.raises(ValueError, match=rf"{FISHER_NAME} does not hold the Fisher.*unexpected \[\('not.a.parameter'"):
        EWCStrategy().load(factory, tmp_path, run_settings)
    (tmp_path / FISHER_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=rf"ewc strategy needs .*{FISHER_NAME} .*to resume; it is missing"):
        EWCStrategy().load(factory, tmp_path, run_settings)


def test_an_interrupted_ewc_run_resumes_with_the_same_results(domains, tmp_path):
    run_settings = settings("ewc", ewc_lambda=1e4)
    reference = run_continual(factory, domains, run_settings, tmp_path / "reference", tokenizer=char_ids)
    run_dir = tmp_path / "interrupted"
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run_continual(factory, domains, run_settings, run_dir, tokenizer=char_ids, callbacks=[CountTrainings(3)])
    assert len(json.loads((run_dir / "progress.json").read_text())["rows"]) == 2  # resumes with a summed Fisher
    counter = CountTrainings()
    resumed = run_continual(factory, domains, run_settings, run_dir, tokenizer=char_ids, callbacks=[counter])
    assert counter.started == len(domains) - 2
    assert resumed["matrix"] == reference["matrix"]


def test_the_card_names_the_ewc_settings():
    section = EWCStrategy().card_section(settings("ewc", ewc_lambda=50.0).to_dict(), "code -> news")
    assert "ewc_lambda 50.0" in section and "from 16 training batches" in section


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ewc_lambda": -1.0}, r"ewc_lambda=-1.0 is invalid: it must be a finite number >= 0"),
        ({"ewc_lambda": float("inf")}, r"ewc_lambda=inf is invalid: it must be a finite number >= 0"),
        ({"ewc_lambda": "high"}, r"ewc_lambda='high' is invalid"),
        ({"ewc_fisher_batches": 0}, r"ewc_fisher_batches=0 is invalid: it must be an int >= 1"),
    ],
)
def test_bad_ewc_settings_are_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        settings("ewc", **changes)
