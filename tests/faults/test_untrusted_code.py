"""Nothing runs a folder's code without `trust_remote_code`, and nothing in the package unpickles."""

import pytest

import hf_hope

from ..helpers import tiny_family_model
from .fault_helpers import REPOSITORY

MARKER_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('the folder ran code')\n"


@pytest.mark.parametrize("kind", ["hope", "retrofitted"])
def test_loading_without_trust_remote_code_never_runs_the_folders_code(tmp_path, kind):
    from transformers import AutoModelForCausalLM

    from ..helpers import tiny_model

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
