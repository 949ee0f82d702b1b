"""`joint`: like `full`, but trained once on the union of all tasks (the multi-task upper bound).

It trains for `num_tasks * steps_per_task` steps (the same total budget as the others); its one row of scores is
repeated for every task so that R stays T x T: its `final_average` is the upper bound, and its transfer and
forgetting are zero by construction.
"""

from collections.abc import Sequence

from .base import TrainingUnit
from .full import FullStrategy


class JointStrategy(FullStrategy):
    """Multi-task training of the whole model on every task at once."""

    name = "joint"
    title = "Joint (multi-task)"
    trains_jointly = True

    def training_units(self, task_names: Sequence[str], steps_per_task: int) -> list[TrainingUnit]:
        return [TrainingUnit(tuple(range(len(task_names))), steps_per_task * len(task_names), "all tasks")]

    def result_matrix(self, rows: list[list[float]], num_tasks: int) -> list[list[float]]:
        return [rows[0]] * num_tasks

    def trained_on(self, task_names: Sequence[str], unit_index: int) -> str:
        return "all tasks at once"
