"""`run_continual`: train a causal LM on a stream of language-modelling tasks, one after the other, and measure R.

For each task in order the model trains with `transformers.Trainer` for `steps_per_task` optimizer steps of
`batch_size` full blocks of `block_size` tokens (the same token budget for every strategy; a fresh AdamW and
learning-rate schedule per task, seeded with `seed + i`), then every task's validation blocks are evaluated:
`R[i][j]` is the perplexity (exp of the mean token loss) on task j after training tasks 0..i. The perplexities
of the prepared model before any training are kept as `initial` (for forward transfer). The summary is
`continual_learning_summary(R, higher_is_better=False, initial=initial)`.

The strategy (`hf_hope.continual.strategies`, named by `settings.strategy`) prepares the model, adds its callbacks
and optimizer, acts between tasks, and says which training runs the stream needs: one per task, or, for `joint`,
one on the union of all tasks' training blocks for `num_tasks * steps_per_task` steps (the same total budget),
whose one row of perplexities is repeated for every task so that R stays T x T (the multi-task upper bound).

On a terminal each training run shows one progress bar (`progress.TrainingProgress`); the libraries' own bars for
model loads and shard writes are hidden, and the DataLoader pins memory only on a GPU, so a log stays quiet.

After each task the model (or LoRA adapter) is saved in `run_dir/task_<i>` and the progress in
`run_dir/progress.json`, both atomically, so a run that stops resumes at the first unfinished task when started
again with the same `run_dir`, settings and tasks, without retraining or losing a finished one.

With `classification=ClassificationSettings(label_names=...)` the tasks are labelled (`text` and `label` columns)
and learnt as text generation (`hf_hope.continual.classification`): a step is `batch_size` examples, the loss is on
the answer tokens only, and `R[i][j]` is the accuracy on task j's validation examples, predicting among every label
of the stream (higher is better; `results["metric"] == "accuracy"`).

With `retention=` (a general text no task holds, `hf_hope.continual.retention`), its perplexity is measured before
training and after each training run too, and the results report `retention`: base perplexity / final perplexity.
Labelled retention data (a `datasets.ClassLabel` `label` column) is scored by accuracy instead, and `retention` is
final accuracy / base accuracy (a set on which the base model scores 0 is refused before any training).
"""

import json
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from torch import nn
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

from ..conversion.atomic_write import write_text_atomically
from ..conversion.folder_lock import folder_lock, refuse_if_in_use
from ..data.progress import library_bars_hidden
from ..metrics import continual_learning_summary
from .blocks import LanguageModellingStream, Tokenizer
from .classification import ClassificationSettings, ClassificationStream
from .progress import TrainingProgress
from .retention import (
    GeneralSet,
    LabelledRetentionSet,
    RetentionSet,
    as_split,
    check_base_score,
    class_label_names,
    retention_summary,
)
from .run_folder import (
    MATRIX_NAME,
    PROGRESS_NAME,
    RESULTS_NAME,
    matrix_csv,
    refuse_several_processes,
    save_task,
    saved_progress,
    start_or_resume,
    task_dir,
    tidy_run_folder,
    write_json,
)
from .settings import ContinualSettings
from .strategies import ModelFactory, Strategy, TrainingData, get_strategy

Tasks = Mapping[str, DatasetDict] | Sequence[tuple[str, DatasetDict]]
EvaluationHook = Callable[[str, str, dict[str, float]], None]  # (what was learnt, metric, {task: score})


def run_continual(
    model_factory: ModelFactory,
    tasks: Tasks,
    settings: ContinualSettings,
    run_dir: str | Path,
    *,
    tokenizer: Tokenizer,
    callbacks: Sequence[TrainerCallback] = (),
    classification: ClassificationSettings | None = None,
    on_evaluation: EvaluationHook | None = None,
    retention: Dataset | DatasetDict | None = None,
) -> dict[str, Any]:
    """Run (or resume) the continual fine-tuning of `model_factory()` on `tasks` in order; returns the results.

    Args:
        model_factory: returns the base causal LM, the same one on every call (e.g. a `from_pretrained` closure).
        tasks: `(name, DatasetDict)` pairs in stream order (or a mapping), each with `train` and `validation`
            splits holding a `text` column, e.g. `hf_hope.data.load_domains()` (and a `label` column for
            classification, e.g. `hf_hope.data.load_clinc()`).
        settings: the run's `ContinualSettings`; `settings.strategy` names the strategy (`STRATEGY_REGISTRY`).
        run_dir: where progress, task models, `results.json` and `matrix.csv` go.
        tokenizer: a `transformers` tokenizer, or a callable mapping a text to token ids.
        callbacks: extra `TrainerCallback`s added to every task's `Trainer`.
        classification: for labelled tasks, how labels become text and are scored; None: language modelling.
        on_evaluation: called after each evaluation with what the model has learnt ("before training", "after
            code", ...), the metric and `{task: score}`, e.g. to print a line; a run read back makes no calls.
        retention: data never trained on (a `validation` split with a `text` column, or a Dataset), e.g.
            `hf_hope.data.load_retention()`, whose perplexity measures how much general ability the stream costs;
            with a `datasets.ClassLabel` `label` column too (`load_retention_text(path, label_column=...)`), its
            accuracy among its own labels instead.
    """
    run_dir = Path(run_dir)
    task_list = task_pairs(tasks)
    general = retention_set(retention, tokenizer, settings)
    identity = run_identity(settings, classification, general)
    # Before anything is written: a folder in use or holding another run is refused, and (unless the run is finished)
    # every task is tokenized, so that a task too small for one batch or one validation block stops the run here.
    refuse_several_processes()
    refuse_if_in_use(run_dir)
    stream = (
        None
        if is_finished(run_dir, identity, task_list, settings)
        else _stream(task_list, tokenizer, settings, classification)
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    with folder_lock(run_dir):  # a second process on this folder stops here (FolderInUseError)
        return _run_locked(
            model_factory,
            task_list,
            settings,
            run_dir,
            tokenizer,
            callbacks,
            classification,
            on_evaluation,
            general,
            identity,
            stream,
        )


def is_finished(
    run_dir: Path, identity: dict[str, Any], tasks: list[tuple[str, DatasetDict]], settings: ContinualSettings
) -> bool:
    """Whether `run_dir` holds the finished run of `identity` (cheap: no model, no data); refuses another run's."""
    names = [name for name, _ in tasks]
    progress = saved_progress(run_dir, identity, names, SETTING_DEFAULTS, ignored_settings(settings.strategy))
    units = get_strategy(settings.strategy).training_units(names, settings.steps_per_task)
    return progress is not None and (run_dir / RESULTS_NAME).is_file() and len(progress["rows"]) == len(units)


def check_tasks(
    tasks: Tasks,
    tokenizer: Tokenizer,
    settings: ContinualSettings,
    classification: ClassificationSettings | None = None,
) -> None:
    """Tokenize every task as `run_continual` would: a clear error naming the task if one is too small for one
    training batch or one validation block (what `run_continual` checks first, before it writes anything)."""
    _stream(task_pairs(tasks), tokenizer, settings, classification)


def _run_locked(
    model_factory: ModelFactory,
    task_list: list[tuple[str, DatasetDict]],
    settings: ContinualSettings,
    run_dir: Path,
    tokenizer: Tokenizer,
    callbacks: Sequence[TrainerCallback],
    classification: ClassificationSettings | None,
    on_evaluation: EvaluationHook | None,
    general: GeneralSet | None,
    identity: dict[str, Any],
    stream: LanguageModellingStream | ClassificationStream | None,
) -> dict[str, Any]:
    """`run_continual` once it holds `run_dir`'s lock (`stream`: the tasks as built before, None if finished then)."""
    tidy_run_folder(run_dir)
    names = [name for name, _ in task_list]
    progress = start_or_resume(run_dir, identity, names, SETTING_DEFAULTS, ignored_settings(settings.strategy))
    strategy = get_strategy(settings.strategy)
    units = strategy.training_units(names, settings.steps_per_task)
    if (run_dir / RESULTS_NAME).is_file() and len(progress["rows"]) == len(units):
        return json.loads((run_dir / RESULTS_NAME).read_text())

    if stream is None:  # finished when checked, but not now (its results were removed since)
        stream = _stream(task_list, tokenizer, settings, classification)
    device = torch.device("cuda" if torch.cuda.is_available() and not settings.use_cpu else "cpu")

    def evaluate_all(model: nn.Module, label: str) -> list[float]:
        scores = stream.evaluate(model, device)
        if on_evaluation is not None:
            on_evaluation(label, stream.metric, dict(zip(names, scores, strict=True)))
        if general is not None:
            progress.setdefault("retention", []).append(general.evaluate(model, device))
        return scores

    done = len(progress["rows"])
    set_seed(settings.seed)
    if done == 0:
        with library_bars_hidden():
            model = strategy.prepare(model_factory(), settings).to(device)
        progress["initial"] = evaluate_all(model, "before training")
        if general is not None:
            check_base_score(general, progress["retention"][0])
    else:
        saved = task_dir(run_dir, done - 1)
        if not saved.is_dir():
            raise FileNotFoundError(
                f"{run_dir} has {done} finished task(s) but no {saved.name} folder to resume from; it was removed. "
                "Start again in a new run_dir."
            )
        with library_bars_hidden():
            model = strategy.load(model_factory, saved, settings).to(device)

    for index, unit in enumerate(units[done:], start=done):
        started = time.perf_counter()
        data = strategy.training_data(stream, units, index, settings)
        seed = settings.seed + index
        bar = TrainingProgress(f"{run_dir.name}: {unit.label}")
        model = _train(model, data, unit.steps, strategy, settings, seed, run_dir, [*callbacks, bar])
        model = strategy.finish_task(model, settings, data)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        row = evaluate_all(model, f"after {unit.label}")
        eval_seconds = time.perf_counter() - started
        with library_bars_hidden():
            save_task(run_dir, index, partial(strategy.save, model))
        progress["rows"].append(row)
        progress["timings"].append(
            {
                "task": unit.label,
                "train_seconds": train_seconds,
                "eval_seconds": eval_seconds,
                **data.budget,
            }
        )
        write_json(run_dir / PROGRESS_NAME, progress)
        if not settings.keep_task_models and index > 0:
            shutil.rmtree(task_dir(run_dir, index - 1), ignore_errors=True)
    return _finish(run_dir, progress, strategy, names, stream.metric, stream.higher_is_better, general)


def task_pairs(tasks: Tasks) -> list[tuple[str, DatasetDict]]:
    """`tasks` as `(name, DatasetDict)` pairs in stream order; at least two, with distinct names."""
    pairs = list(tasks.items()) if isinstance(tasks, Mapping) else [tuple(task) for task in tasks]
    names = [name for name, _ in pairs]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"Give at least two tasks with distinct names; got {names}.")
    return pairs


def run_identity(
    settings: ContinualSettings,
    classification: ClassificationSettings | None,
    retention: GeneralSet | None = None,
) -> dict[str, Any]:
    """What ties a run folder to its settings (as JSON values): a run resumes only under the same identity.

    Another strategy's settings (`ignored_settings`) are left out: they do not change what this run computes.
    """
    ignored = ignored_settings(settings.strategy)
    identity = {key: value for key, value in _json_settings(settings).items() if not key.startswith(ignored)}
    if classification is not None:
        identity["classification"] = classification.identity()
    if retention is not None:
        identity["retention"] = retention.identity()
    return identity


def ignored_settings(strategy: str) -> tuple[str, ...]:
    """The prefixes of the strategy-specific settings `strategy` does not read (`Strategy.settings_prefixes`)."""
    reads = get_strategy(strategy).settings_prefixes
    return tuple(prefix for prefix in STRATEGY_SETTING_PREFIXES if prefix not in reads)


def _json_settings(settings: ContinualSettings) -> dict[str, Any]:
    return json.loads(json.dumps(settings.to_dict()))


# The settings that belong to one strategy or another (CMS levels, LoRA, replay, EWC), by name prefix.
STRATEGY_SETTING_PREFIXES = ("cms_", "lora_", "replay_", "ewc_")
# What a run saved before a setting existed used for it: that setting's default.
SETTING_DEFAULTS = _json_settings(ContinualSettings())


def retention_set(
    retention: Dataset | DatasetDict | None, tokenizer: Tokenizer, settings: ContinualSettings
) -> GeneralSet | None:
    """The retention set (None: none): labelled data (a ClassLabel `label` column) as examples scored by accuracy,
    else the text cut into blocks as the run's validation blocks are, scored by perplexity."""
    if retention is None:
        return None
    if class_label_names(as_split(retention)) is not None:
        return LabelledRetentionSet(retention, tokenizer)
    return RetentionSet(retention, tokenizer, settings.block_size, settings.max_eval_blocks, settings.eval_batch_size)


def _stream(
    tasks: list[tuple[str, DatasetDict]],
    tokenizer: Tokenizer,
    settings: ContinualSettings,
    classification: ClassificationSettings | None,
) -> LanguageModellingStream | ClassificationStream:
    if classification is not None:
        return ClassificationStream(tasks, tokenizer, classification, settings.batch_size)
    return LanguageModellingStream(
        tasks, tokenizer, settings.block_size, settings.batch_size, settings.max_eval_blocks, settings.eval_batch_size
    )


def _train(
    model: nn.Module,
    data: TrainingData,
    steps: int,
    strategy: Strategy,
    settings: ContinualSettings,
    seed: int,
    run_dir: Path,
    callbacks: Sequence[TrainerCallback],
) -> nn.Module:
    set_seed(seed)
    args = TrainingArguments(
        output_dir=str(run_dir / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=data.batch_size,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler_type,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        warmup_steps=0,
        seed=seed,
        data_seed=seed,
        dataloader_drop_last=True,
        save_strategy="no",
        logging_steps=max(1, steps // 10),
        report_to="none",
        disable_tqdm=True,
        use_cpu=settings.use_cpu,
        dataloader_pin_memory=torch.cuda.is_available() and not settings.use_cpu,  # without a GPU it only warns
    )
    trainer = StrategyTrainer(
        strategy,
        model=model,
        args=args,
        train_dataset=data.dataset,
        data_collator=data.collator,
        callbacks=[*strategy.callbacks(settings), *callbacks],
        optimizers=(strategy.optimizer(model, settings), None),
    )
    trainer.remove_callback(PrinterCallback)  # the logs stay in trainer.state.log_history, not on the console
    trainer.train()
    return trainer.model


class StrategyTrainer(Trainer):
    """`Trainer` whose loss adds the strategy's `loss_penalty` (if any) to the model's own loss."""

    def __init__(self, strategy: Strategy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.strategy = strategy

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, **kwargs: Any):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        penalty = self.strategy.loss_penalty(model)
        if penalty is not None:
            loss = loss + penalty
        return (loss, outputs) if return_outputs else loss


def _finish(
    run_dir: Path,
    progress: dict[str, Any],
    strategy: Strategy,
    names: list[str],
    metric: str,
    higher_is_better: bool,
    general: GeneralSet | None,
) -> dict[str, Any]:
    rows = progress["rows"]
    matrix = strategy.result_matrix(rows, len(names))
    if not all(math.isfinite(value) for row in matrix for value in row):
        raise ValueError(f"The {metric} matrix has non-finite entries (training diverged?): {matrix}.")
    results = {
        **progress,
        "strategy": strategy.name,
        "metric": metric,
        "matrix": matrix,
        "joint_row_repeated": strategy.trains_jointly,
        "summary": continual_learning_summary(matrix, higher_is_better=higher_is_better, initial=progress["initial"]),
    }
    if general is not None:  # the run's identity ties it to this set, so `progress` holds its scores
        results["retention"] = retention_summary(progress["retention"], general.metric, general.higher_is_better)
        results["summary"]["retention"] = results["retention"]["retention"]
    write_text_atomically(run_dir / MATRIX_NAME, matrix_csv(matrix, names))
    write_json(run_dir / RESULTS_NAME, results)
    return results
