"""`continual_learning`: an `evaluate` metric summarising a continual-learning run from its performance matrix.

After training each task, evaluate every task and `add` the row of scores; `compute` then gives the final
average, plasticity, backward and forward transfer, and forgetting (absolute and relative). The math lives in
`summary.py` next to this script (imported relatively, so `evaluate` copies it along).
"""

import datasets
import evaluate

from .summary import continual_learning_summary

_CITATION = """\
@inproceedings{lopezpaz2017gem,
  title={Gradient Episodic Memory for Continual Learning},
  author={Lopez-Paz, David and Ranzato, Marc'Aurelio},
  booktitle={Advances in Neural Information Processing Systems},
  year={2017}
}
@inproceedings{chaudhry2018rwalk,
  title={Riemannian Walk for Incremental Learning: Understanding Forgetting and Intransigence},
  author={Chaudhry, Arslan and Dokania, Puneet K. and Ajanthan, Thalaiyasingam and Torr, Philip H. S.},
  booktitle={European Conference on Computer Vision},
  year={2018}
}
"""

_DESCRIPTION = """\
Summary of a continual-learning run over T tasks from its performance matrix R, where R[i][j] is the score
(accuracy, perplexity, loss...) on task j after training tasks 0..i. Every task is evaluated after every task,
so R is a full T x T matrix, T >= 2. With higher_is_better=False (perplexity, loss) differences are negated so
that positive transfer always means better and positive forgetting always means worse.

- final_average = mean_j R[T-1][j] (ACC, Lopez-Paz & Ranzato 2017); final_per_task = R[T-1].
- plasticity_per_task = [R[j][j]], performance right after learning each task; plasticity = its mean.
- backward_transfer_per_task[j] = R[T-1][j] - R[j][j] (higher is better) or R[j][j] - R[T-1][j] (lower is
  better) for j < T-1; backward_transfer = its mean (BWT, Lopez-Paz & Ranzato 2017).
- forgetting_per_task[j] = max_{j<=i<=T-2} R[i][j] - R[T-1][j] (higher is better) or
  R[T-1][j] - min_{j<=i<=T-2} R[i][j] (lower is better) for j < T-1; forgetting = its mean (Chaudhry et al.
  2018, counting only rows i >= j, after task j was learned).
- relative_forgetting_per_task[j] = (R[j][j] - R[T-1][j]) / |R[j][j]| (higher is better) or
  (R[T-1][j] - R[j][j]) / |R[j][j]| (lower is better) for j < T-1; relative_forgetting = its mean. For
  perplexity: the mean relative rise in the earlier tasks' perplexity after the last task. NaN where R[j][j] = 0.
- With initial (scores before any training): forward_transfer_per_task[j] = R[j-1][j] - initial[j] (higher is
  better) or initial[j] - R[j-1][j] (lower is better) for 1 <= j <= T-1; forward_transfer = its mean (FWT,
  Lopez-Paz & Ranzato 2017).
"""

_KWARGS_DESCRIPTION = """
Args:
    performance (`list` of `list` of `float`): rows of the matrix R, in task order: row i holds the scores on
        all T tasks after training tasks 0..i. Give them one per `add(performance=row)` after each task, several
        with `add_batch(performance=rows)`, or all at once with `compute(performance=R, ...)`. Rows are used in
        the order they were added, so use one process (num_process=1).
    higher_is_better (`bool`): required; True for accuracy-like scores, False for perplexity or loss.
    initial (`list` of `float`, *optional*): the T scores before any training, for forward transfer.
Returns:
    num_tasks (`int`): T.
    final_average, plasticity, backward_transfer, forgetting, relative_forgetting (`float`): means.
    final_per_task, plasticity_per_task (`list` of T `float`).
    backward_transfer_per_task, forgetting_per_task, relative_forgetting_per_task (`list` of T-1 `float`):
        tasks 0..T-2.
    forward_transfer (`float`) and forward_transfer_per_task (`list` of T-1 `float`, tasks 1..T-1): only with
        initial.
Raises:
    ValueError: higher_is_better missing; R not square, with fewer than 2 rows or a missing or non-finite value;
        initial not T finite numbers.
Examples:
    >>> import hf_hope.metrics
    >>> metric = hf_hope.metrics.load_continual_metric()
    >>> for row in [[20.0, 80.0], [30.0, 16.0]]:  # perplexities on both tasks after each task
    ...     metric.add(performance=row)
    >>> metric.compute(higher_is_better=False)["relative_forgetting"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ContinualLearning(evaluate.Metric):
    """Final average, plasticity, transfer and forgetting of a continual-learning performance matrix."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"performance": datasets.Sequence(datasets.Value("float64"))}),
            reference_urls=["https://arxiv.org/abs/1706.08840", "https://arxiv.org/abs/1801.10112"],
        )

    def _compute(
        self,
        performance: list[list[float]],
        higher_is_better: bool | None = None,
        initial: list[float] | None = None,
    ) -> dict:
        if higher_is_better is None:
            raise ValueError(
                "pass higher_is_better=True (accuracy) or higher_is_better=False (perplexity, loss) to compute()"
            )
        return continual_learning_summary(performance, higher_is_better=higher_is_better, initial=initial)
