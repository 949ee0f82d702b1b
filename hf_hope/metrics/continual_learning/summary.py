"""Continual-learning summary of an accuracy or perplexity matrix, in plain Python (no `evaluate`, no numpy).

`R[i][j]` is the performance on task j after training tasks 0..i (T tasks, a full T x T matrix: every task is
evaluated after every task, including the tasks not trained yet). With `higher_is_better` (accuracy) gains are
`+`; without it (perplexity, loss) every difference is negated so that, for both directions, positive transfer
means "better" and positive forgetting means "worse". `initial[j]` is the performance on task j before any
training (optional, for forward transfer). Means are over the tasks each quantity is defined for.

- `final_average` = mean_j R[T-1][j] (ACC of Lopez-Paz & Ranzato, 2017), `final_per_task` = R[T-1].
- `plasticity_per_task` = [R[j][j]] (performance right after learning each task), `plasticity` its mean.
- `backward_transfer_per_task[j]` = R[T-1][j] - R[j][j] (higher is better) or R[j][j] - R[T-1][j] (lower is
  better), j < T-1; `backward_transfer` its mean (BWT of Lopez-Paz & Ranzato, 2017; negated for lower).
- `forgetting_per_task[j]` = max_{j<=i<=T-2} R[i][j] - R[T-1][j] (higher is better) or
  R[T-1][j] - min_{j<=i<=T-2} R[i][j] (lower is better), j < T-1; `forgetting` its mean. This is the
  forgetting measure of Chaudhry et al., 2018 (RWalk): the drop from the best value seen before the last task,
  except that only rows i >= j count (rows before task j was trained measure zero-shot performance).
- `relative_forgetting_per_task[j]` = (R[j][j] - R[T-1][j]) / |R[j][j]| (higher is better) or
  (R[T-1][j] - R[j][j]) / |R[j][j]| (lower is better), j < T-1; `relative_forgetting` its mean. For
  perplexity this is the "mean relative rise in earlier domains' perplexity after the last task", measured
  from the value right after learning the task (so it is -backward_transfer_per_task[j] / |R[j][j]|). An entry
  whose R[j][j] is 0 is NaN, and so is then the mean.
- With `initial`: `forward_transfer_per_task[j]` = R[j-1][j] - initial[j] (higher is better) or
  initial[j] - R[j-1][j] (lower is better), 1 <= j <= T-1; `forward_transfer` its mean (FWT of Lopez-Paz &
  Ranzato, 2017, with `initial` as the baseline b).
"""

import math
from collections.abc import Sequence
from typing import Any

SummaryValue = int | float | list[float]


def _as_finite_float(value: Any, where: str) -> float:
    if value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a finite number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{where} must be a finite number, got {number}")
    return number


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def validate_matrix(matrix: Sequence[Sequence[Any]]) -> list[list[float]]:
    """Check that `matrix` is a square T x T matrix of finite numbers with T >= 2; return it as float rows."""
    if matrix is None or isinstance(matrix, (str, bytes)):
        raise ValueError(f"matrix must be a list of rows, got {matrix!r}")
    rows = list(matrix)
    num_tasks = len(rows)
    if num_tasks < 2:
        raise ValueError(f"need at least 2 tasks (rows) to measure transfer and forgetting, got {num_tasks}")
    checked = []
    for i, row in enumerate(rows):
        if row is None or isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
            raise ValueError(f"row {i} must be a list of {num_tasks} numbers, got {row!r}")
        if len(row) != num_tasks:
            raise ValueError(
                f"matrix must be square (one row per task, one column per task): row {i} has {len(row)} values "
                f"but there are {num_tasks} rows"
            )
        checked.append([_as_finite_float(value, f"R[{i}][{j}]") for j, value in enumerate(row)])
    return checked


def continual_learning_summary(
    matrix: Sequence[Sequence[Any]],
    *,
    higher_is_better: bool,
    initial: Sequence[Any] | None = None,
) -> dict[str, SummaryValue]:
    """Final average, plasticity, backward/forward transfer and forgetting of a T x T performance matrix.

    Args:
        matrix: `matrix[i][j]` is the performance on task j after training tasks 0..i; T >= 2 rows of T
            finite numbers.
        higher_is_better: True for accuracy-like scores, False for perplexity or loss.
        initial: optional performance on each task before any training (T finite numbers), for forward transfer.

    Returns:
        A dict of floats (means), lists of floats (`*_per_task`) and `num_tasks`; see the module docstring for
        the formulas. `forward_transfer*` are present only when `initial` is given.

    Raises:
        ValueError: `higher_is_better` is not a bool; the matrix is not square, has fewer than 2 rows or holds
            a missing or non-finite value; `initial` does not hold T finite numbers.
    """
    if not isinstance(higher_is_better, bool):
        raise ValueError(
            f"higher_is_better must be True (accuracy) or False (perplexity, loss), got {higher_is_better!r}"
        )
    r = validate_matrix(matrix)
    num_tasks = len(r)
    last = num_tasks - 1
    best = max if higher_is_better else min

    def gain(new: float, old: float) -> float:
        """How much better `new` is than `old` (written out per direction, so that no -0.0 appears)."""
        return new - old if higher_is_better else old - new

    diagonal = [r[j][j] for j in range(num_tasks)]
    backward = [gain(r[last][j], r[j][j]) for j in range(last)]
    forgetting = [gain(best(r[i][j] for i in range(j, last)), r[last][j]) for j in range(last)]
    relative = [gain(r[j][j], r[last][j]) / abs(r[j][j]) if r[j][j] != 0 else math.nan for j in range(last)]

    summary: dict[str, SummaryValue] = {
        "num_tasks": num_tasks,
        "final_average": _mean(r[last]),
        "final_per_task": list(r[last]),
        "plasticity": _mean(diagonal),
        "plasticity_per_task": diagonal,
        "backward_transfer": _mean(backward),
        "backward_transfer_per_task": backward,
        "forgetting": _mean(forgetting),
        "forgetting_per_task": forgetting,
        "relative_forgetting": _mean(relative),
        "relative_forgetting_per_task": relative,
    }
    if initial is not None:
        if isinstance(initial, (str, bytes)) or not hasattr(initial, "__len__") or len(initial) != num_tasks:
            raise ValueError(f"initial must hold one number per task ({num_tasks}), got {initial!r}")
        baseline = [_as_finite_float(value, f"initial[{j}]") for j, value in enumerate(initial)]
        forward = [gain(r[j - 1][j], baseline[j]) for j in range(1, num_tasks)]
        summary["forward_transfer"] = _mean(forward)
        summary["forward_transfer_per_task"] = forward
    return summary
