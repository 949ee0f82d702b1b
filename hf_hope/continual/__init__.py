"""Continual fine-tuning of causal LMs: strategies (full, LoRA, CMS adapter, joint), the resumable runner and R.

`run_continual(model_factory, tasks, settings, run_dir, tokenizer=...)` trains on a stream of language-modelling
tasks in order and writes the T x T perplexity matrix and its continual-learning summary into `run_dir`; with
`classification=ClassificationSettings(label_names=...)` the tasks are labelled and R is the accuracy.
`run_experiment(...)` runs several strategies that way and compares them (tables, plots, model cards).
`load_tasks(paths)` reads the user's own tasks (text, JSON lines, CSV, Parquet or `save_to_disk` folders).
Each strategy is a `Strategy` subclass in `STRATEGY_REGISTRY` (`hf_hope.continual.strategies`); `register_strategy`
adds one.
"""

from .answer_scoring import AnswerTree, answer_log_likelihoods, most_likely_answer
from .blocks import BlockDataset, group_blocks, task_blocks, tokenize_texts
from .classification import ClassificationSettings
from .experiment import format_comparison, metric_direction, named_runs, run_experiment
from .perplexity import perplexity
from .runner import run_continual
from .settings import STRATEGIES, ContinualSettings
from .strategies import (
    STRATEGY_REGISTRY,
    Strategy,
    attention_projections,
    build_optimizer,
    get_strategy,
    load_task_model,
    prepare_model,
    register_strategy,
    save_task_model,
    strategy_callbacks,
)
from .user_tasks import UserTasks, load_retention_text, load_tasks

__all__ = [
    "STRATEGIES",
    "STRATEGY_REGISTRY",
    "AnswerTree",
    "BlockDataset",
    "ClassificationSettings",
    "ContinualSettings",
    "Strategy",
    "UserTasks",
    "answer_log_likelihoods",
    "attention_projections",
    "build_optimizer",
    "format_comparison",
    "get_strategy",
    "group_blocks",
    "load_retention_text",
    "load_tasks",
    "load_task_model",
    "metric_direction",
    "most_likely_answer",
    "named_runs",
    "perplexity",
    "prepare_model",
    "register_strategy",
    "run_continual",
    "run_experiment",
    "save_task_model",
    "strategy_callbacks",
    "task_blocks",
    "tokenize_texts",
]
