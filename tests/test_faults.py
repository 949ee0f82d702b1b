"""Faults injected into every write that must not tear: what is on disk afterwards is the old state or the new one.

- Killed processes: a real child process dies (`os._exit`, which skips every `finally`, as `kill -9` does) at a
  chosen point of `save_cms_adapter`, `OnlineLearner.save` and `hf-hope continual`; the folder then loads the old
  state or the new one, and a rerun gives the uninterrupted results bitwise.
- Damaged and hostile files (truncated, random bytes, another architecture's config, wrong types, another model's
  clock state, not a GGUF): an error naming the file, the folder unchanged.
- Folders in use: a live owner's lock stops a second process (exit 2); a dead owner's lock is taken over.
- A full disk half-way through a write: the old files survive.
- Names that look like paths, training at a high learning rate with an injected inf, and nothing that unpickles or
  runs a folder's code without `trust_remote_code`.
"""

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file

import hf_hope
from hf_hope.cli import main
from hf_hope.clock.online_learner import LEARNER_STATE_NAME, OnlineLearner
from hf_hope.continual import ContinualSettings, run_continual, run_experiment
from hf_hope.conversion import CMS_CONFIG_NAME, CMS_WEIGHTS_NAME, cms_adapter_state_dict
from hf_hope.conversion.atomic_write import recover_swapped_folder
from hf_hope.conversion.folder_lock import LOCK_NAME, FolderInUseError, folder_lock
from hf_hope.data.prepare import DataPreparationSettings, domains_dir

from .helpers import QUICK_TINY, tiny_config, tiny_family_model

REPOSITORY = Path(__file__).resolve().parents[1]
LEVELS = [{"period": None}, {"period": 4}]

# Saves the adapter twice (other weights, another lr_scale), the second time dying at the os.replace call number
# CRASH_AT (0: after the save).
ADAPTER_CHILD = """
import os, sys, torch, hf_hope
from safetensors.torch import save_file
from hf_hope.conversion import cms_adapter_state_dict
from tests.helpers import tiny_family_model
folder, crash_at = sys.argv[1], int(sys.argv[2])
model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=[{"period": None}, {"period": 4}]))
def perturb(seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
    return {name: tensor.contiguous() for name, tensor in cms_adapter_state_dict(model).items()}
save_file(perturb(1), folder + ".old.safetensors")
hf_hope.save_cms_adapter(model, folder)
save_file(perturb(2), folder + ".new.safetensors")
model.config.cms_adapter["levels"][1]["lr_scale"] = 0.5  # the new config differs from the old one too
real_replace, calls = os.replace, [0]
def dying_replace(source, target):
    calls[0] += 1
    if calls[0] == crash_at:
        os._exit(9)
    real_replace(source, target)
os.replace = dying_replace
hf_hope.save_cms_adapter(model, folder)
os._exit(9)
"""

# Saves a learner, learns more, then saves again and dies at the named point of the second save.
LEARNER_CHILD = """
import os, sys, pathlib, torch
from hf_hope import HopeForCausalLM
from hf_hope.clock import online_learner
from tests.helpers import tiny_config
folder, crash = pathlib.Path(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
learner = online_learner.OnlineLearner(HopeForCausalLM(tiny_config()), chunk_size=16, context_size=8)
learner.observe(torch.arange(3, 43))
learner.save(folder)
learner.observe(torch.arange(3, 67))
if crash == "after the model":
    online_learner.save_clock_state = lambda clock, path: os._exit(9)
else:  # between the two renames that swap the folders
    real_rename = pathlib.Path.rename
    def dying_rename(self, target):
        if pathlib.Path(target) == folder:
            os._exit(9)
        return real_rename(self, target)
    pathlib.Path.rename = dying_rename
learner.save(folder)
"""


def killed(code: str, *arguments: str) -> None:
    """Run `code` in a child process that must die with status 9 (its `os._exit(9)`)."""
    finished = subprocess.run(
        [sys.executable, "-c", code, *arguments], cwd=REPOSITORY, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 9, finished.stderr[-3000:]


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[name], expected[name]) for name in expected)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize(("crash_at", "survivor"), [(1, "old"), (2, "new"), (0, "new")])
def test_save_cms_adapter_killed_at_any_point_leaves_the_old_pair_or_the_new_one(tmp_path, crash_at, survivor):
    folder = tmp_path / "adapter"
    killed(ADAPTER_CHILD, str(folder), str(crash_at))
    model = hf_hope.load_cms_adapter(tiny_family_model("llama"), folder)
    assert_same_tensors(cms_adapter_state_dict(model), load_file(f"{folder}.{survivor}.safetensors"))
    assert model.config.cms_adapter["levels"][1]["lr_scale"] == {"old": 1.0, "new": 0.5}[survivor]
    hf_hope.save_cms_adapter(hf_hope.retrofit(tiny_family_model("llama")), folder)  # the next save tidies up
    assert sorted(path.name for path in folder.iterdir()) == sorted([CMS_CONFIG_NAME, CMS_WEIGHTS_NAME])


def test_an_adapter_pair_from_two_saves_is_refused(tmp_path):
    for name in ("first", "second"):
        hf_hope.save_cms_adapter(hf_hope.retrofit(tiny_family_model("llama")), tmp_path / name)
    (tmp_path / "first" / CMS_CONFIG_NAME).write_bytes((tmp_path / "second" / CMS_CONFIG_NAME).read_bytes())
    with pytest.raises(ValueError, match=rf"{CMS_WEIGHTS_NAME} and .*{CMS_CONFIG_NAME} come from different saves"):
        hf_hope.load_cms_adapter(tiny_family_model("llama"), tmp_path / "first")


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        (CMS_WEIGHTS_NAME, lambda data: data[: len(data) // 2], "is not a readable safetensors file"),
        (CMS_WEIGHTS_NAME, lambda data: os.urandom(len(data)), "is not a readable safetensors file"),
        (CMS_WEIGHTS_NAME, lambda data: b"", "is not a readable safetensors file"),
        (CMS_CONFIG_NAME, lambda data: data[: len(data) // 2], "is not valid JSON"),
        (CMS_CONFIG_NAME, lambda data: b"\xff\xfe" + os.urandom(64), "is not valid JSON"),
        (CMS_CONFIG_NAME, lambda data: b"[1, 2]", "holds a JSON list"),
    ],
)
def test_damaged_adapter_files_are_refused_naming_the_file_and_nothing_changes(tmp_path, name, damage, message):
    hf_hope.save_cms_adapter(hf_hope.retrofit(tiny_family_model("llama")), tmp_path)
    (tmp_path / name).write_bytes(damage((tmp_path / name).read_bytes()))
    before = folder_bytes(tmp_path)
    base = tiny_family_model("llama")
    with pytest.raises(ValueError, match=rf"{tmp_path / name}.*{message}"):
        hf_hope.load_cms_adapter(base, tmp_path)
    assert folder_bytes(tmp_path) == before
    assert not hasattr(base.config, "cms_adapter")


def test_an_adapter_config_without_its_base_model_is_a_clear_error(tmp_path):
    hf_hope.save_cms_adapter(hf_hope.retrofit(tiny_family_model("llama")), tmp_path)
    config = json.loads((tmp_path / CMS_CONFIG_NAME).read_text())
    del config["base_model"]
    (tmp_path / CMS_CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{CMS_CONFIG_NAME} does not describe the base model"):
        hf_hope.load_cms_adapter(tiny_family_model("llama"), tmp_path)


def saved_learner(folder: Path) -> OnlineLearner:
    model = hf_hope.HopeForCausalLM.from_pretrained(folder)
    learner = OnlineLearner(model, chunk_size=16, context_size=8)
    learner.load(folder)
    return learner


@pytest.mark.parametrize("crash", ["after the model", "between the renames"])
def test_online_learner_save_killed_midway_leaves_the_previous_save_whole(tmp_path, crash):
    folder = tmp_path / "learner"
    killed(LEARNER_CHILD, str(folder), crash)
    recover_swapped_folder(folder)  # what the next save or load does first
    learner = saved_learner(folder)
    assert learner.tokens_seen == 40  # the first save's count, with the first save's model
    torch.manual_seed(0)
    reference = OnlineLearner(hf_hope.HopeForCausalLM(tiny_config()), chunk_size=16, context_size=8)
    reference.observe(torch.arange(3, 43))
    reference_weights = reference.model.state_dict()
    assert all(torch.equal(tensor, reference_weights[name]) for name, tensor in learner.model.state_dict().items())
    assert not list(tmp_path.glob(".learner.previous-*"))  # the previous save is back in place


def test_online_learner_save_replaces_the_folder_in_one_step(tmp_path):
    torch.manual_seed(0)
    learner = OnlineLearner(hf_hope.HopeForCausalLM(tiny_config()), chunk_size=16, context_size=8)
    learner.observe(torch.arange(3, 43))
    learner.save(tmp_path / "learner")
    learner.observe(torch.arange(3, 35))
    learner.save(tmp_path / "learner")
    assert saved_learner(tmp_path / "learner").tokens_seen == 72
    assert (tmp_path / "learner" / LEARNER_STATE_NAME).is_file()
    assert [path.name for path in tmp_path.iterdir()] == ["learner"]


def tiny_llama() -> torch.nn.Module:
    return tiny_family_model("llama")


def dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


def continual_settings() -> ContinualSettings:
    return ContinualSettings(strategy="full", steps_per_task=1, batch_size=2, block_size=16, use_cpu=True)


def run_one(tasks, run_dir):
    run_continual(tiny_llama, tasks, continual_settings(), run_dir, tokenizer=list)


def run_several(tasks, run_dir):
    strategies = {"full": continual_settings()}
    run_experiment(tiny_llama, tasks, strategies, run_dir, tokenizer=list, base_model="tiny", data_description="")


@pytest.mark.parametrize("run", [run_one, run_several], ids=["run_continual", "run_experiment"])
def test_a_run_folder_in_use_by_a_live_process_is_refused_before_the_tasks_are_read(tmp_path, run):
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    tasks = {"a": None, "b": None}  # not datasets: reading them would fail, so the lock must be checked first
    with pytest.raises(FolderInUseError, match=rf"{tmp_path} is in use by process {os.getppid()}.*lock file"):
        run(tasks, tmp_path)
    assert json.loads(lock.read_text())["pid"] == os.getppid()  # the other process's lock stays
    assert sorted(path.name for path in tmp_path.iterdir()) == [LOCK_NAME]


def test_a_lock_left_by_a_dead_process_is_taken_over_and_released(tmp_path, capsys):
    pid = dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with folder_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(FolderInUseError, match=f"in use by process {os.getpid()}"), folder_lock(tmp_path):
            pass
    assert f"the process that held it ({{'pid': {pid}" in capsys.readouterr().err
    assert not (tmp_path / LOCK_NAME).exists()


def test_prepare_data_on_a_cache_another_process_is_building_exits_2(tmp_path, capsys):
    settings = DataPreparationSettings(benchmark="domains", excerpts=True, cache_dir=str(tmp_path))
    folder = domains_dir(settings)
    folder.parent.mkdir(parents=True)
    lock = folder.parent / f".{folder.name}.lock"
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    with pytest.raises(SystemExit) as raised:
        main(["prepare-data", "--benchmark", "domains", "--excerpts", "--cache_dir", str(tmp_path)])
    error = capsys.readouterr().err
    assert raised.value.code == 2 and error.count("\n") == 1, error
    assert error.startswith("hf-hope prepare-data: error: ") and f"in use by process {os.getppid()}" in error
    assert not folder.exists()


MARKER_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('the folder ran code')\n"


@pytest.mark.parametrize("kind", ["hope", "retrofitted"])
def test_loading_without_trust_remote_code_never_runs_the_folders_code(tmp_path, kind):
    from transformers import AutoModelForCausalLM

    from .helpers import tiny_model

    model = tiny_model() if kind == "hope" else hf_hope.retrofit(tiny_family_model("llama"))
    model.save_pretrained(tmp_path / "model")
    marker = tmp_path / "marker"
    python_files = sorted((tmp_path / "model").glob("*.py"))
    assert python_files  # the folder carries its modeling code (auto_map)
    for path in python_files:
        path.write_text(MARKER_CODE.format(marker=str(marker)) + path.read_text())
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")  # hf_hope is imported: its own classes load
    assert type(loaded).__module__.startswith("hf_hope.")
    assert not marker.exists()


def test_nothing_in_the_package_unpickles():
    import ast

    for path in [
        *REPOSITORY.glob("hf_hope/**/*.py"),
        *REPOSITORY.glob("conversion/*.py"),
        *REPOSITORY.glob("modeling/*.py"),
    ]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            if (owner, node.func.attr) == ("torch", "load"):
                keywords = {keyword.arg: keyword.value for keyword in node.keywords}
                assert isinstance(keywords.get("weights_only"), ast.Constant), f"{path}:{node.lineno}"
                assert keywords["weights_only"].value is True, f"{path}:{node.lineno}"
            assert (owner, node.func.attr) not in {("pickle", "load"), ("pickle", "loads"), ("yaml", "load")}, (
                f"{path}:{node.lineno} unpickles or loads YAML unsafely"
            )


# `hf-hope continual` on the tiny model, dying (as under kill -9) at the named point of its first run.
CONTINUAL_CHILD = """
import os, sys
from hf_hope.cli import main
crash, argv = sys.argv[1], sys.argv[2:]
def dying(original, at):
    calls = [0]
    def wrapper(*arguments, **keywords):
        calls[0] += 1
        if calls[0] == at:
            os._exit(9)
        return original(*arguments, **keywords)
    return wrapper
if crash == "mid-task":  # the second task's second step
    import transformers
    transformers.Trainer.training_step = dying(transformers.Trainer.training_step, 4)
elif crash == "mid-evaluation":  # the evaluation after the second task
    from hf_hope.continual import blocks
    blocks.LanguageModellingStream.evaluate = dying(blocks.LanguageModellingStream.evaluate, 3)
elif crash == "saving a task":  # the second task's model, written but not yet renamed into place
    from hf_hope.conversion import atomic_write
    atomic_write.move_into_place = dying(atomic_write.move_into_place, 2)
elif crash == "writing results":
    from hf_hope.continual import experiment
    experiment.write_json = dying(experiment.write_json, 1)
main(argv)
if crash != "none":
    raise SystemExit("the run finished without reaching the crash point " + crash)
"""


def continual(crash: str, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CONTINUAL_CHILD, crash, *argv],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_results(folder: Path) -> dict:
    results = json.loads((folder / "results.json").read_text())
    return {name: (run["initial"], run["matrix"]) for name, run in results["runs"].items()}


@pytest.fixture(scope="module")
def uninterrupted(tiny_dir, tmp_path_factory):
    """The results of an uninterrupted run, and the flags that made it (less the output folder)."""
    cache = tmp_path_factory.mktemp("data")
    flags = ["continual", "--model", str(tiny_dir), "--data_cache_dir", str(cache), *QUICK_TINY, "--strategies", "full"]
    out = tmp_path_factory.mktemp("uninterrupted")
    finished = continual("none", [*flags, "--output_dir", str(out)])
    assert finished.returncode == 0, finished.stderr[-3000:]
    return run_results(out), flags


@pytest.mark.parametrize("crash", ["mid-task", "mid-evaluation", "saving a task", "writing results"])
def test_hf_hope_continual_killed_then_rerun_gives_the_uninterrupted_results_bitwise(tmp_path, uninterrupted, crash):
    reference, flags = uninterrupted
    argv = [*flags, "--output_dir", str(tmp_path / "run")]
    killed_run = continual(crash, argv)
    assert killed_run.returncode == 9, killed_run.stderr[-3000:]
    assert not (tmp_path / "run" / "results.json").exists()
    rerun = continual("none", argv)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert run_results(tmp_path / "run") == reference
    leftovers = [path.name for path in (tmp_path / "run").rglob(".*")]
    assert leftovers == [], leftovers  # no lock, staging or previous folder left behind


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def random_bytes(data: bytes) -> bytes:
    return os.urandom(max(len(data), 64))


@pytest.mark.parametrize("damage", [half, random_bytes, lambda data: b""], ids=["truncated", "random", "empty"])
@pytest.mark.parametrize("kind", ["hope", "retrofitted"])
def test_a_damaged_model_safetensors_is_refused_naming_the_folder(tmp_path, kind, damage):
    from transformers import AutoModelForCausalLM

    from .helpers import tiny_model

    model = tiny_model() if kind == "hope" else hf_hope.retrofit(tiny_family_model("llama"))
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    before = folder_bytes(tmp_path)
    with pytest.raises(ValueError, match=rf"The weights in {tmp_path} cannot be read .*damaged or truncated"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    assert folder_bytes(tmp_path) == before


def test_a_config_of_another_architecture_or_of_wrong_types_is_refused(tmp_path):
    from transformers import AutoModelForCausalLM

    from .helpers import tiny_model

    tiny_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match="config.json is of model type 'llama', not 'hope'"):
        hf_hope.HopeForCausalLM.from_pretrained(tmp_path)
    for field, value in [("hidden_size", "wide"), ("num_heads", 2.5), ("rms_norm_eps", float("inf"))]:
        (tmp_path / "config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises((StrictDataclassError, ValueError), match=field):  # transformers' own checks, or ours
            AutoModelForCausalLM.from_pretrained(tmp_path)


def test_damaged_clock_and_learner_states_are_refused_naming_the_file(tmp_path):
    from hf_hope.clock.core import LevelClock
    from hf_hope.clock.state_file import load_clock_state, save_clock_state

    model = hf_hope.HopeForCausalLM(tiny_config())
    save_clock_state(LevelClock(model), tmp_path / "clock.safetensors")
    data = (tmp_path / "clock.safetensors").read_bytes()
    for damage in (half, random_bytes):
        (tmp_path / "damaged.safetensors").write_bytes(damage(data))
        with pytest.raises(ValueError, match=rf"{tmp_path / 'damaged.safetensors'} is not a level clock state"):
            load_clock_state(LevelClock(model), tmp_path / "damaged.safetensors")
    other = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS))
    with pytest.raises(ValueError, match="saved for other levels or parameters"):
        load_clock_state(LevelClock(other), tmp_path / "clock.safetensors")

    learner = OnlineLearner(model, chunk_size=16, context_size=8)
    learner.save(tmp_path / "learner")
    state = tmp_path / "learner" / LEARNER_STATE_NAME
    for damage in (half, random_bytes):
        state.write_bytes(damage(state.read_bytes()))
        with pytest.raises(ValueError, match=rf"{state} cannot be read .*damaged or truncated"):
            OnlineLearner(model, chunk_size=16, context_size=8).load(tmp_path / "learner")


def test_a_file_that_is_not_gguf_is_refused_and_nothing_is_written(tmp_path):
    pytest.importorskip("gguf")
    (tmp_path / "model.gguf").write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'model.gguf'} does not start with the GGUF magic bytes"):
        hf_hope.convert_gguf(tmp_path / "model.gguf", tmp_path / "out")
    assert [path.name for path in tmp_path.iterdir()] == ["model.gguf"]


@pytest.mark.slow
@pytest.mark.parametrize("data", ["repeated", "random"])
@pytest.mark.parametrize("memory", ["default", "widest"])
def test_hope_trained_hard_keeps_finite_weights_and_counts_every_skipped_step(data, memory):
    """300 steps at lr 1e-2: weights stay finite; each step with a non-finite gradient (one is injected) is skipped
    and counted."""
    from hf_hope.clock.clocked_optimizer import ClockedOptimizer
    from hf_hope.clock.core import LevelClock

    overrides = {} if memory == "default" else {"memory_expansion": 8, "chunk_size": 16}
    torch.manual_seed(0)
    model = hf_hope.HopeForCausalLM(tiny_config(**overrides)).float().train()
    clock = LevelClock(model)
    optimizer = ClockedOptimizer(torch.optim.AdamW(clock.param_groups(model.parameters(), lr=1e-2)), clock)
    generator = torch.Generator().manual_seed(0)
    fixed = torch.randint(2, 97, (2, 32), generator=generator)
    non_finite = 0
    for step in range(300):
        batch = fixed if data == "repeated" else torch.randint(2, 97, (2, 32), generator=generator)
        model(input_ids=batch, labels=batch).loss.backward()
        gradients = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
        if step == 150:
            gradients[0].view(-1)[0] = float("inf")  # an injected fault: this step must be skipped
        non_finite += not all(torch.isfinite(gradient).all() for gradient in gradients)
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.isfinite(parameter).all() for parameter in model.parameters())
    assert clock.skipped_steps == non_finite >= 1
    assert clock.step == 300 - non_finite


def test_task_names_that_look_like_paths_never_write_outside_the_run_folder(tmp_path):
    from hf_hope.data import load_domains

    domains = load_domains(excerpts=True, cache_dir=str(tmp_path / "data"))
    code, news = domains["code"], domains["news"]
    hostile = {"../escaped": code, str(tmp_path / "absolute"): news}
    settings = ContinualSettings(
        strategy="full", steps_per_task=1, batch_size=2, block_size=16, max_eval_blocks=2, use_cpu=True
    )
    results = run_continual(
        tiny_llama, hostile, settings, tmp_path / "run" / "inner", tokenizer=lambda text: [3] * len(text)
    )
    assert results["tasks"] == list(hostile)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "run"]
    assert [path.name for path in (tmp_path / "run").iterdir()] == ["inner"]


def test_a_full_disk_during_save_cms_adapter_keeps_the_old_adapter(tmp_path, monkeypatch):
    from hf_hope.conversion import adapter_files

    model = hf_hope.retrofit(tiny_family_model("llama"), hf_hope.CMSConfig(levels=LEVELS))
    hf_hope.save_cms_adapter(model, tmp_path)
    before = folder_bytes(tmp_path)
    real_save_file = adapter_files.save_file

    def full_disk(tensors, path, metadata=None):
        real_save_file(tensors, path, metadata=metadata)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(adapter_files, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        hf_hope.save_cms_adapter(model, tmp_path)
    assert folder_bytes(tmp_path) == before  # the old pair, and no staged file left


def test_a_full_disk_during_a_folder_save_keeps_the_old_folder(tmp_path, monkeypatch):
    torch.manual_seed(0)
    learner = OnlineLearner(hf_hope.HopeForCausalLM(tiny_config()), chunk_size=16, context_size=8)
    learner.observe(torch.arange(3, 43))
    learner.save(tmp_path / "learner")
    before = folder_bytes(tmp_path / "learner")
    learner.observe(torch.arange(3, 35))
    real_save = torch.save

    def full_disk(state, path, *arguments, **keywords):
        real_save(state, path, *arguments, **keywords)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        learner.save(tmp_path / "learner")
    assert folder_bytes(tmp_path / "learner") == before
    assert [path.name for path in tmp_path.iterdir()] == ["learner"]  # the staging folder is gone
