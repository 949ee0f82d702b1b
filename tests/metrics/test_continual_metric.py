"""The `continual_learning` evaluate metric against hand-computed 3 x 3 accuracy and perplexity matrices.

The metric is loaded the way the workflow loads it, `evaluate.load(<folder in the package>)`, with the offline
variables set and sockets refused; one test does so in a fresh interpreter with an empty Hugging Face cache.
"""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import evaluate
import pytest

from hf_hope.metrics import continual_learning_summary, continual_metric_path, load_continual_metric

# Accuracy after training task i (rows) on task j (columns). Task 0 improves after task 1 (0.95), then drops.
ACCURACY = [
    [0.90, 0.10, 0.20],
    [0.95, 0.85, 0.15],
    [0.60, 0.80, 0.95],
]
ACCURACY_INITIAL = [0.10, 0.05, 0.25]
ACCURACY_EXPECTED = {
    "num_tasks": 3,
    "final_average": (0.60 + 0.80 + 0.95) / 3,  # 0.78333...
    "final_per_task": [0.60, 0.80, 0.95],
    "plasticity": (0.90 + 0.85 + 0.95) / 3,  # 0.9
    "plasticity_per_task": [0.90, 0.85, 0.95],
    "backward_transfer": (-0.30 - 0.05) / 2,  # -0.175
    "backward_transfer_per_task": [0.60 - 0.90, 0.80 - 0.85],
    "forgetting": (0.35 + 0.05) / 2,  # 0.2: from the best earlier value, 0.95 for task 0
    "forgetting_per_task": [0.95 - 0.60, 0.85 - 0.80],
    "relative_forgetting": (1 / 3 + 1 / 17) / 2,  # 10/51
    "relative_forgetting_per_task": [0.30 / 0.90, 0.05 / 0.85],
    "forward_transfer": (0.05 - 0.10) / 2,  # -0.025
    "forward_transfer_per_task": [0.10 - 0.05, 0.15 - 0.25],
}

# Perplexity (lower is better). Task 0 improves after task 1 (18), then rises to 30.
PERPLEXITY = [
    [20.0, 80.0, 100.0],
    [18.0, 16.0, 90.0],
    [30.0, 20.0, 10.0],
]
PERPLEXITY_INITIAL = [200.0, 100.0, 80.0]
PERPLEXITY_EXPECTED = {
    "num_tasks": 3,
    "final_average": 20.0,
    "final_per_task": [30.0, 20.0, 10.0],
    "plasticity": 46.0 / 3,
    "plasticity_per_task": [20.0, 16.0, 10.0],
    "backward_transfer": -7.0,  # negated: positive would mean the earlier perplexities fell
    "backward_transfer_per_task": [20.0 - 30.0, 16.0 - 20.0],
    "forgetting": 8.0,  # rise above the best earlier value, 18 for task 0
    "forgetting_per_task": [30.0 - 18.0, 20.0 - 16.0],
    "relative_forgetting": 0.375,  # the benchmark's mean relative rise after the last task
    "relative_forgetting_per_task": [0.5, 0.25],
    "forward_transfer": 5.0,
    "forward_transfer_per_task": [100.0 - 80.0, 80.0 - 90.0],  # initial[j] - R[j-1][j]
}

CASES = [
    pytest.param(ACCURACY, True, ACCURACY_INITIAL, ACCURACY_EXPECTED, id="accuracy"),
    pytest.param(PERPLEXITY, False, PERPLEXITY_INITIAL, PERPLEXITY_EXPECTED, id="perplexity"),
]
WITHOUT_INITIAL = {"forward_transfer", "forward_transfer_per_task"}


def assert_summary(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


@pytest.fixture
def metric(monkeypatch):
    """The metric loaded offline, with any socket connection failing the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError("the metric must load without the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return load_continual_metric()


@pytest.mark.parametrize(("matrix", "higher_is_better", "initial", "expected"), CASES)
def test_summary_function_matches_hand_computed(matrix, higher_is_better, initial, expected):
    assert_summary(continual_learning_summary(matrix, higher_is_better=higher_is_better, initial=initial), expected)
    without = {key: value for key, value in expected.items() if key not in WITHOUT_INITIAL}
    assert_summary(continual_learning_summary(matrix, higher_is_better=higher_is_better), without)


@pytest.mark.parametrize(("matrix", "higher_is_better", "initial", "expected"), CASES)
def test_metric_matches_hand_computed_and_summary_function(metric, matrix, higher_is_better, initial, expected):
    result = metric.compute(performance=matrix, higher_is_better=higher_is_better, initial=initial)
    assert_summary(result, expected)
    assert result == continual_learning_summary(matrix, higher_is_better=higher_is_better, initial=initial)


@pytest.mark.parametrize(("matrix", "higher_is_better", "initial", "expected"), CASES)
def test_metric_rows_added_after_each_task(metric, matrix, higher_is_better, initial, expected):
    for row in matrix:
        metric.add(performance=row)
    assert_summary(metric.compute(higher_is_better=higher_is_better, initial=initial), expected)
    metric.add_batch(performance=matrix[:2])
    metric.add(performance=matrix[2])
    without = {key: value for key, value in expected.items() if key not in WITHOUT_INITIAL}
    assert_summary(metric.compute(higher_is_better=higher_is_better), without)


def test_metric_info_and_paths():
    path = Path(continual_metric_path())
    assert path.is_absolute() and path.name == "continual_learning"
    assert (path / "continual_learning.py").is_file() and (path / "summary.py").is_file()
    metric = evaluate.load(str(path / "continual_learning.py"), keep_in_memory=True)  # the script path works too
    assert list(metric.features) == ["performance"]
    assert "Lopez-Paz" in metric.citation and "Chaudhry" in metric.citation
    assert "relative_forgetting" in metric.description and "higher_is_better" in metric.inputs_description
    assert metric.compute(performance=[[1.0, 2.0], [3.0, 4.0]], higher_is_better=True)["final_average"] == 3.5


def test_relative_forgetting_is_nan_where_the_diagonal_is_zero():
    summary = continual_learning_summary([[0.0, 0.0], [0.5, 0.5]], higher_is_better=True)
    assert math.isnan(summary["relative_forgetting_per_task"][0]) and math.isnan(summary["relative_forgetting"])
    assert summary["forgetting"] == -0.5 and summary["backward_transfer"] == 0.5


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_unchanged_scores_give_exact_zeros(higher_is_better):
    summary = continual_learning_summary([[2.0, 5.0], [2.0, 5.0]], higher_is_better=higher_is_better, initial=[5, 5])
    for key in ("backward_transfer", "forgetting", "relative_forgetting", "forward_transfer"):
        assert summary[key] == 0.0 and math.copysign(1.0, summary[key]) == 1.0, key  # no -0.0


BAD_INPUTS = [
    pytest.param([[0.5, 0.5], [0.5]], {}, "square", id="ragged"),
    pytest.param([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]], {}, "square", id="not-square"),
    pytest.param([[0.5]], {}, "at least 2 tasks", id="one-task"),
    pytest.param([], {}, "at least 2 tasks", id="empty"),
    pytest.param([[0.5, float("nan")], [0.5, 0.5]], {}, "finite", id="nan"),
    pytest.param([[0.5, 0.5], [float("inf"), 0.5]], {}, "finite", id="inf"),
    pytest.param([[0.5, None], [0.5, 0.5]], {}, "finite", id="missing"),
    pytest.param([[0.5, "0.5"], [0.5, 0.5]], {}, "finite", id="string"),
    pytest.param([[0.5, 0.5], [0.5, 0.5]], {"initial": [0.1]}, "one number per task", id="initial-length"),
    pytest.param([[0.5, 0.5], [0.5, 0.5]], {"initial": [0.1, float("nan")]}, "finite", id="initial-nan"),
    pytest.param([[0.5, 0.5], [0.5, 0.5]], {"higher_is_better": None}, "higher_is_better", id="direction"),
]


@pytest.mark.parametrize(("matrix", "kwargs", "message"), BAD_INPUTS)
def test_summary_function_rejects(matrix, kwargs, message):
    kwargs = {"higher_is_better": True, **kwargs}
    with pytest.raises(ValueError, match=message):
        continual_learning_summary(matrix, **kwargs)


@pytest.mark.parametrize(
    ("matrix", "kwargs", "message"),
    [
        pytest.param([[0.5, 0.5], [0.5]], {"higher_is_better": True}, "square", id="ragged"),
        pytest.param([[0.5]], {"higher_is_better": True}, "at least 2 tasks", id="one-task"),
        pytest.param([[0.5, float("nan")], [0.5, 0.5]], {"higher_is_better": False}, "finite", id="nan"),
        pytest.param([[0.5, None], [0.5, 0.5]], {"higher_is_better": False}, "finite", id="missing"),
        pytest.param([[0.5, 0.5], [0.5, 0.5]], {"higher_is_better": True, "initial": [1.0]}, "per task", id="init"),
        pytest.param([[0.5, 0.5], [0.5, 0.5]], {}, "higher_is_better", id="no-direction"),
    ],
)
def test_metric_rejects(metric, matrix, kwargs, message):
    with pytest.raises(ValueError, match=message):
        metric.compute(performance=matrix, **kwargs)


def test_loads_offline_in_a_fresh_interpreter_with_an_empty_cache(tmp_path):
    script = f"""
import json, socket
def no_network(*args, **kwargs):
    raise OSError("network used")
socket.socket.connect = no_network
socket.create_connection = no_network
import evaluate
metric = evaluate.load({continual_metric_path()!r})
for row in {PERPLEXITY!r}:
    metric.add(performance=row)
print(json.dumps(metric.compute(higher_is_better=False)))
"""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == continual_learning_summary(PERPLEXITY, higher_is_better=False)
    assert result["relative_forgetting"] == pytest.approx(0.375)
    assert list((tmp_path / "modules").rglob("summary.py")), "evaluate copies the math next to the script"
