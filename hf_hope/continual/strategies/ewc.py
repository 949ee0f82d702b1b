"""`ewc`: full fine-tuning with online elastic weight consolidation (Kirkpatrick et al. 2017; Schwarz et al. 2018).

After each task the diagonal Fisher F of that task is estimated and added to the Fisher of the earlier tasks, and
the parameters theta* after the task become the anchor; every later step adds `ewc_lambda / 2 * sum F (theta -
theta*)^2` to the loss, so parameters that mattered to earlier tasks move less. The first task trains as `full`.

F is the per-batch empirical Fisher: the squared gradient of the mean loss of a training batch, averaged over the
first `ewc_fisher_batches` batches of `batch_size` items in a seeded order. It costs one backward pass per batch
(a per-example Fisher costs one per example) and uses the training labels rather than samples from the model. Its
entries are smaller than a per-example Fisher's (up to `batch_size` times: the noise of a batch mean averages out)
and shrink as the model grows, which `ewc_lambda` absorbs. The accumulated F is saved with each task model
(`ewc_fisher.safetensors`), so a resumed run penalises exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import default_data_collator

from ...conversion.atomic_write import write_safetensors
from .base import ModelFactory, TrainingData, save_task_model
from .full import FullStrategy

if TYPE_CHECKING:
    from ..settings import ContinualSettings

FISHER_NAME = "ewc_fisher.safetensors"

Tensors = dict[str, torch.Tensor]


class EWCStrategy(FullStrategy):
    """Full fine-tuning pulled toward earlier tasks' parameters, each weighted by its accumulated Fisher."""

    name = "ewc"
    settings_prefixes = ("ewc_",)
    title = "EWC"

    def __init__(self) -> None:
        self.ewc_lambda = 0.0
        self.fisher: Tensors | None = None  # summed over the finished tasks; None before the first one
        self.anchor: Tensors | None = None  # the parameters after the latest finished task

    def prepare(self, model: nn.Module, settings: ContinualSettings) -> nn.Module:
        self.ewc_lambda = settings.ewc_lambda
        return super().prepare(model, settings)

    def load(self, model_factory: ModelFactory, folder: str | Path, settings: ContinualSettings) -> nn.Module:
        """The saved model, with its accumulated Fisher read back and its parameters as the anchor."""
        self.ewc_lambda = settings.ewc_lambda
        model = super().load(model_factory, folder, settings)
        self.fisher = load_fisher(Path(folder) / FISHER_NAME, trainable_parameters(model))
        self.anchor = parameter_copies(model)
        return model

    def save(self, model: nn.Module, folder: str | Path) -> None:
        save_task_model(model, folder)
        write_safetensors(
            {name: value.contiguous().cpu() for name, value in self.fisher.items()}, Path(folder) / FISHER_NAME
        )

    def finish_task(self, model: nn.Module, settings: ContinualSettings, data: TrainingData) -> nn.Module:
        """Add the finished task's Fisher to the accumulated one, and anchor to the parameters it ended with."""
        fisher = empirical_fisher(model, data, settings.batch_size, settings.ewc_fisher_batches, settings.seed)
        if self.fisher is not None:
            fisher = {name: value + self.fisher[name].to(value.device) for name, value in fisher.items()}
        self.fisher, self.anchor = fisher, parameter_copies(model)
        return model

    def loss_penalty(self, model: nn.Module) -> torch.Tensor | None:
        """`ewc_lambda / 2 * sum F (theta - theta*)^2` once a task has finished (and `ewc_lambda` > 0), else None."""
        if self.fisher is None or self.ewc_lambda == 0:
            return None
        terms = []
        for name, parameter in trainable_parameters(model).items():
            if self.fisher[name].device != parameter.device:  # read back on the CPU, trained on the model's device
                self.fisher[name] = self.fisher[name].to(parameter.device)
                self.anchor[name] = self.anchor[name].to(parameter.device)
            terms.append((self.fisher[name] * (parameter - self.anchor[name]).square()).sum())
        return self.ewc_lambda / 2 * torch.stack(terms).sum()

    def card_section(self, settings: Mapping[str, Any], trained_on: str) -> str:
        return (
            f"{super().card_section(settings, trained_on)} From the second task on, the loss adds the online EWC "
            f"penalty with ewc_lambda {settings['ewc_lambda']}, its diagonal Fisher estimated after each task from "
            f"{settings['ewc_fisher_batches']} training batches."
        )


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that train, by name."""
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


def parameter_copies(model: nn.Module) -> Tensors:
    """Detached copies of the trainable parameters, by name (the EWC anchor)."""
    return {name: parameter.detach().clone() for name, parameter in trainable_parameters(model).items()}


def empirical_fisher(model: nn.Module, data: TrainingData, batch_size: int, num_batches: int, seed: int) -> Tensors:
    """The mean over the first `num_batches` batches of `data.task_dataset` (in a seeded order) of the squared
    gradient of each batch's loss, per trainable parameter, in float32 on the model's device (model in eval mode)."""
    dataset, collator = data.task_dataset, data.collator or default_data_collator
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [order[start : start + batch_size] for start in range(0, len(order) - batch_size + 1, batch_size)]
    batches = batches[:num_batches]
    parameters = trainable_parameters(model)
    fisher = {name: torch.zeros_like(parameter, dtype=torch.float32) for name, parameter in parameters.items()}
    device, training = next(iter(parameters.values())).device, model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for batch in batches:
            inputs = {key: value.to(device) for key, value in collator([dataset[i] for i in batch]).items()}
            model(**inputs).loss.backward()
            for name, parameter in parameters.items():
                if parameter.grad is not None:  # None: unused by this forward pass
                    fisher[name] += parameter.grad.float().square()
            model.zero_grad(set_to_none=True)
    model.train(training)
    return {name: value / len(batches) for name, value in fisher.items()}


def load_fisher(path: Path, parameters: Mapping[str, nn.Parameter]) -> Tensors:
    """The Fisher saved at `path`; a clear error when it is missing or names other parameters than `parameters`."""
    if not path.is_file():
        raise FileNotFoundError(f"The ewc strategy needs {path} (the accumulated Fisher) to resume; it is missing.")
    fisher = load_file(str(path))
    shapes = {name: tuple(value.shape) for name, value in fisher.items()}
    expected = {name: tuple(parameter.shape) for name, parameter in parameters.items()}
    if shapes != expected:
        missing, unexpected = sorted(expected.items() - shapes.items()), sorted(shapes.items() - expected.items())
        raise ValueError(
            f"{path} does not hold the Fisher of this model's trainable parameters (names and shapes): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}."
        )
    return fisher
