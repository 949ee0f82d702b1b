"""Evaluation metrics shipped with hf_hope as `evaluate` modules, loadable offline from the installed package.

`continual_learning`: the summary of a continual-learning run (final average, plasticity, backward and forward
transfer, forgetting) from the matrix R[i][j] of scores on task j after training task i. Use
`load_continual_metric()` for the `evaluate` module, or `continual_learning_summary` for the same numbers
without `evaluate`.
"""

from pathlib import Path
from typing import Any

from .continual_learning.summary import continual_learning_summary, validate_matrix

CONTINUAL_METRIC_NAME = "continual_learning"


def continual_metric_path() -> str:
    """The absolute path of the `continual_learning` metric folder, for `evaluate.load(path)`."""
    return str(Path(__file__).resolve().parent / CONTINUAL_METRIC_NAME)


def load_continual_metric(**kwargs: Any) -> Any:
    """`evaluate.load(continual_metric_path(), **kwargs)`, kept in memory unless told otherwise.

    Loading a local folder never touches the network, so this works with `HF_HUB_OFFLINE=1` and
    `HF_EVALUATE_OFFLINE=1`. `evaluate` copies the script into its modules cache (`HF_MODULES_CACHE`).
    """
    import evaluate

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(continual_metric_path(), **kwargs)


__all__ = [
    "CONTINUAL_METRIC_NAME",
    "continual_learning_summary",
    "continual_metric_path",
    "load_continual_metric",
    "validate_matrix",
]
