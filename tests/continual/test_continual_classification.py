"""Classification as language modelling: exact shared-prompt scoring, answer-only labels, and CLINC runs end to end."""

import json
import math

import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file

from hf_hope.continual import (
    STRATEGIES,
    ClassificationSettings,
    ContinualSettings,
    run_continual,
)
from hf_hope.continual.classification import AnswerOnlyDataset, pad_batch, task_examples
from hf_hope.data import intent_names, load_clinc
from hf_hope.data.sources import excerpt_path, read_clinc

from ..helpers import tiny_family_model
from .test_continual_runner import CountTrainings, char_ids

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clinc_tasks(tmp_path_factory):
    """Three tasks of five intents from the packaged CLINC excerpt (10 train, 5 validation examples each)."""
    tasks = load_clinc(excerpts=True, intents_per_task=5, cache_dir=str(tmp_path_factory.mktemp("data")))
    return [(f"intents_{index}", task) for index, task in enumerate(tasks[:3])]


def settings(strategy: str, **changes) -> ContinualSettings:
    values = {
        "strategy": strategy,
        "steps_per_task": 2,
        "batch_size": 2,
        "learning_rate": 1e-2,
        "lora_rank": 4,
        "cms_periods": [2, 1],
        "cms_width": 16,
        "use_cpu": True,
    }
    return ContinualSettings(**{**values, **changes})


def classification(**changes) -> ClassificationSettings:
    return ClassificationSettings(**{"label_names": intent_names(), "max_eval_examples": 3, **changes})


def factory() -> torch.nn.Module:
    return tiny_family_model("llama")


def test_examples_become_prompt_and_answer_with_the_loss_on_the_answer_only():
    names = ["restaurant reviews", "nutrition info"]
    config = ClassificationSettings(label_names=names)
    data = DatasetDict(train=Dataset.from_dict({"text": ["is tgi good", "fat in an egg"], "label": [0, 1]}))
    examples = task_examples("t", data, "train", char_ids, config)
    assert examples[0].prompt_ids == char_ids("Utterance: is tgi good\nIntent:")
    assert examples[1].answer_ids == char_ids(" nutrition info\n") and examples[1].label == 1

    batch = pad_batch([AnswerOnlyDataset(examples)[index] for index in range(2)])
    lengths = [len(example.prompt_ids) + len(example.answer_ids) for example in examples]
    longest = max(lengths)
    for row, (example, length) in enumerate(zip(examples, lengths, strict=True)):
        prompt = len(example.prompt_ids)
        assert batch["input_ids"][row, :length].tolist() == example.prompt_ids + example.answer_ids
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * (longest - length)
        assert batch["labels"][row].tolist() == [-100] * prompt + example.answer_ids + [-100] * (longest - length)


def test_capped_evaluation_takes_examples_from_every_label_in_turn():
    data = DatasetDict(validation=Dataset.from_dict({"text": list("abcdefg"), "label": [0, 0, 0, 1, 1, 2, 2]}))
    config = ClassificationSettings(label_names=["x", "y", "z"])
    capped = task_examples("t", data, "validation", char_ids, config, max_examples=4)
    assert [example.prompt_ids[len("Utterance: ")] for example in capped] == [ord(c) for c in "adfb"]


def test_clinc_intent_names_are_indexed_by_intent_id():
    names, raw = intent_names(), intent_names(readable=False)
    assert len(names) == 151 and len(set(names)) == 151
    assert (raw[0], names[0], names[42], names[150]) == (
        "restaurant_reviews",
        "restaurant reviews",
        "oos",
        "change volume",
    )
    first_text = {}
    for row in read_clinc(excerpt_path("clinc")):
        first_text.setdefault(int(row["label"]), row["text"])
    assert first_text[0] == "do people like the donuts at tgi"  # intent 0 is restaurant reviews
    assert "nutritional" in first_text[1] and names[1] == "nutrition info"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_clinc_stream_runs_end_to_end_with_an_accuracy_matrix(clinc_tasks, tmp_path, strategy):
    results = run_continual(
        factory, clinc_tasks, settings(strategy), tmp_path, tokenizer=char_ids, classification=classification()
    )
    names = [name for name, _ in clinc_tasks]
    assert (tmp_path / "results.json").read_text() == json.dumps(results, indent=2) + "\n"  # NaN != NaN: as text
    assert results["metric"] == "accuracy" and results["tasks"] == names
    matrix = results["matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert all(0 <= value <= 1 and (value * 3) % 1 == 0 for row in matrix for value in row)  # 3 examples per task
    assert len(results["initial"]) == 3 and all(0 <= value <= 1 for value in results["initial"])
    summary = results["summary"]
    assert {"final_average", "backward_transfer", "forgetting", "plasticity", "forward_transfer"} <= set(summary)
    assert summary["final_average"] == pytest.approx(sum(matrix[-1]) / 3)
    assert summary["plasticity"] == pytest.approx(sum(matrix[i][i] for i in range(3)) / 3)
    units = 1 if strategy == "joint" else 3
    assert [timing["train_examples"] for timing in results["timings"]] == [2 * 2 * (3 if units == 1 else 1)] * units
    assert results["settings"]["classification"] == classification().identity()


def test_training_on_the_answers_teaches_the_labels(clinc_tasks, tmp_path):
    """Validated on its own training examples, a model trained on the answers must beat chance (1/15) by far."""
    memorise = [(name, DatasetDict(train=task["train"], validation=task["train"])) for name, task in clinc_tasks]
    results = run_continual(
        factory,
        memorise,
        settings("joint", steps_per_task=40, batch_size=4, learning_rate=1e-2),
        tmp_path,
        tokenizer=char_ids,
        classification=classification(max_eval_examples=None),
    )
    assert results["summary"]["final_average"] >= 0.5 > max(results["initial"])


def test_a_task_without_examples_is_a_clear_error(clinc_tasks, tmp_path):
    name, task = clinc_tasks[1]
    empty = DatasetDict(train=task["train"].select([]), validation=task["validation"])
    tasks = [clinc_tasks[0], (name, empty)]
    with pytest.raises(ValueError, match="'intents_1'.*'train' split has no examples"):
        run_continual(factory, tasks, settings("full"), tmp_path, tokenizer=char_ids, classification=classification())
    one = DatasetDict(train=task["train"].select([0]), validation=task["validation"])
    with pytest.raises(ValueError, match="'intents_1' has 1 training examples, fewer than one batch of 2"):
        run_continual(
            factory,
            [clinc_tasks[0], (name, one)],
            settings("full"),
            tmp_path,
            tokenizer=char_ids,
            classification=classification(),
        )
    assert not list(tmp_path.glob("task_*"))


def test_labels_without_a_name_or_column_are_clear_errors(clinc_tasks, tmp_path):
    with pytest.raises(ValueError, match=r"Label \d+ has no name: label_names has 3 entries"):
        run_continual(
            factory,
            clinc_tasks,
            settings("full"),
            tmp_path,
            tokenizer=char_ids,
            classification=classification(label_names=["a", "b", "c"]),
        )
    unlabelled = DatasetDict({split: data.remove_columns("label") for split, data in clinc_tasks[0][1].items()})
    with pytest.raises(ValueError, match="needs 'text' and 'label' columns"):
        run_continual(
            factory,
            [("a", unlabelled), clinc_tasks[1]],
            settings("full"),
            tmp_path,
            tokenizer=char_ids,
            classification=classification(),
        )
    with pytest.raises(ValueError, match=r"\{text\}"):
        classification(prompt_template="no field")


def test_answers_that_start_one_another_are_refused(clinc_tasks, tmp_path):
    names = intent_names()
    first, second = (clinc_tasks[0][1]["train"]["label"][index] for index in (0, -1))
    names[first], names[second] = "pto request", "pto request status"
    with pytest.raises(ValueError, match="'pto request' and 'pto request status'.*end answer_template"):
        run_continual(
            factory,
            clinc_tasks,
            settings("full"),
            tmp_path,
            tokenizer=char_ids,
            classification=classification(label_names=names, answer_template=" {label}"),
        )


def test_an_interrupted_classification_run_resumes_and_gives_the_same_matrix(clinc_tasks, tmp_path):
    def run(run_dir, **kwargs):
        return run_continual(
            factory,
            clinc_tasks,
            settings("lora"),
            run_dir,
            tokenizer=char_ids,
            classification=classification(),
            **kwargs,
        )

    reference = run(tmp_path / "reference")
    with pytest.raises(RuntimeError, match="simulated interruption"):
        run(tmp_path / "interrupted", callbacks=[CountTrainings(fail_at=2)])
    counter = CountTrainings()
    resumed = run(tmp_path / "interrupted", callbacks=[counter])
    assert counter.started == 2
    assert resumed["matrix"] == reference["matrix"] and resumed["initial"] == reference["initial"]
    adapters = [
        load_file(tmp_path / run / "task_2" / "adapter_model.safetensors") for run in ("reference", "interrupted")
    ]
    assert adapters[0].keys() == adapters[1].keys()
    assert all(torch.equal(adapters[0][key], adapters[1][key]) for key in adapters[0])  # same training, bitwise
    with pytest.raises(ValueError, match="other settings.*classification"):
        run_continual(
            factory,
            clinc_tasks,
            settings("lora"),
            tmp_path / "interrupted",
            tokenizer=char_ids,
            classification=classification(max_eval_examples=2),
        )
    assert all(math.isfinite(value) for row in resumed["matrix"] for value in row)
