"""The wheel holds every package of the source tree, and the one model card template."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"hf_hope": "hf_hope", "hf_hope.modeling": "modeling", "hf_hope.conversion": "conversion"}


def test_every_package_folder_is_listed_for_the_wheel():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join([package, *init.parent.relative_to(ROOT / folder).parts]))
    assert found <= set(tool["packages"]), sorted(found - set(tool["packages"]))
    assert tool["package-dir"]["hf_hope.templates"] == "."
    assert tool["package-data"]["hf_hope.templates"] == ["model_card_template.md"]
    assert (ROOT / "model_card_template.md").is_file()
