"""The wheel holds every package and data folder of the source tree and the model card template, without warnings."""

import fnmatch
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"hf_hope": "hf_hope", "hf_hope.modeling": "modeling", "hf_hope.conversion": "conversion"}
SOURCES = ("pyproject.toml", "README.md", "model_card_template.md", *FOLDERS.values())


def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def shipped_files() -> dict[str, list[Path]]:
    """{package: its files} for every folder of the source tree that holds files (modules or data)."""
    found = {}
    for package, folder in FOLDERS.items():
        for directory in [ROOT / folder, *(ROOT / folder).rglob("*")]:
            files = [path for path in directory.glob("*") if path.is_file() and path.suffix != ".pyc"]
            if directory.is_dir() and directory.name != "__pycache__" and files:
                found[".".join([package, *directory.relative_to(ROOT / folder).parts])] = files
    return found


def test_every_folder_with_files_is_a_listed_package_and_its_data_is_declared():
    tool = setuptools_config()
    found = shipped_files()
    assert set(found) <= set(tool["packages"]), sorted(set(found) - set(tool["packages"]))
    for package, files in found.items():
        patterns = tool["package-data"].get(package, []) + ["*.py"]
        undeclared = [path.name for path in files if not any(fnmatch.fnmatch(path.name, p) for p in patterns)]
        assert not undeclared, (package, undeclared)
    assert tool["package-dir"]["hf_hope.templates"] == "."
    assert tool["package-data"]["hf_hope.templates"] == ["model_card_template.md"]
    assert (ROOT / "model_card_template.md").is_file()


def test_the_wheel_builds_without_warnings_and_holds_the_excerpts_and_the_template(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # a clean copy: no stale build/ folder, nothing written into the checkout
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."]
    built = subprocess.run(command, cwd=source, capture_output=True, text=True, timeout=300)
    output = built.stdout + built.stderr
    assert built.returncode == 0, output
    assert "warning" not in output.lower(), output
    (wheel,) = tmp_path.glob("hf_hope-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    excerpts = ROOT / "hf_hope" / "data" / "excerpts"
    expected = {f"hf_hope/data/excerpts/{path.relative_to(excerpts).as_posix()}" for path in excerpts.rglob("*.*")}
    assert expected and expected <= names, sorted(expected - names)
    assert "hf_hope/templates/model_card_template.md" in names
