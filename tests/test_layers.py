"""The layers read one way: modeling <- conversion <- hf_hope's library <- hf_hope.cli (docs/design.md, "Layers")."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY_ROOMS = ("clock", "optim", "continual", "data", "metrics")


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module `path` (inside `package`) imports, at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.add(node.module)
                continue
            parent = package.split(".")[: len(package.split(".")) - node.level + 1]
            names.add(".".join([*parent, node.module] if node.module else parent))
    return names


def sources(folder: str, package: str) -> list[tuple[Path, str]]:
    """Every Python file below `folder`, with the package it belongs to when installed."""
    base = ROOT / folder
    return [(path, ".".join([package, *path.relative_to(base).parent.parts])) for path in sorted(base.rglob("*.py"))]


def test_the_model_imports_nothing_of_the_layers_above():
    for path, package in sources("modeling", "hf_hope.modeling"):
        own = {name for name in imported_modules(path, package) if name.startswith("hf_hope")}
        assert all(name.startswith("hf_hope.modeling") for name in own), (path.name, own)


def test_the_model_files_are_flat_with_single_dot_imports():
    """Checkpoints carry these files (auto_map); transformers copies them into one folder and follows `from .x`."""
    for path, package in sources("modeling", "hf_hope.modeling"):
        assert package == "hf_hope.modeling", path
        imports = [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)]
        assert all(node.level == 0 or (node.level == 1 and node.module) for node in imports), path.name


def test_the_adapter_imports_only_the_model():
    for path, package in sources("conversion", "hf_hope.conversion"):
        own = {name for name in imported_modules(path, package) if name.startswith("hf_hope")}
        allowed = ("hf_hope.modeling", "hf_hope.conversion")
        assert all(name.startswith(allowed) for name in own), (path.name, own)


@pytest.mark.parametrize("room", LIBRARY_ROOMS)
def test_library_code_never_imports_the_commands(room):
    for path, package in sources(f"hf_hope/{room}", f"hf_hope.{room}"):
        assert not any(name.startswith("hf_hope.cli") for name in imported_modules(path, package)), path
