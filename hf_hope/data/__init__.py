"""Data for the continual fine-tuning benchmarks, built offline from registry packages.

- `load_domains()`: the domain-incremental language-modelling stream code -> news -> literature, a
  `DatasetDict(train, validation)` of `id` and `text` per domain, split by document.
- `load_clinc()`: class-incremental CLINC150, 15 tasks of 10 disjoint intents, a `DatasetDict(train, validation)` of
  `text` and `label` per task.
- `load_retention()`: the retention set, pages of the Python documentation in one `validation` split, trained on by
  no stream: the score of general ability a stream should not lose.

Both read the cache written by `prepare_data` (`hf-hope prepare-data`) and prepare it first if it is missing;
`excerpts=True` builds them from the small excerpts shipped in the package instead of the full sources.
"""

from .clinc import assign_tasks, build_clinc_tasks, intent_names
from .domains import DOMAINS, Document, DomainSizes, build_domain, build_domain_stream, split_documents
from .prepare import (
    DataPreparationSettings,
    clinc_task_intents,
    load_clinc,
    load_domains,
    load_retention,
    load_retention_if_available,
    prepare_clinc,
    prepare_data,
    prepare_domains,
    prepare_retention,
    resolve_cache_dir,
)
from .sources import MissingSourceError

__all__ = [
    "DOMAINS",
    "DataPreparationSettings",
    "Document",
    "DomainSizes",
    "MissingSourceError",
    "assign_tasks",
    "build_clinc_tasks",
    "build_domain",
    "build_domain_stream",
    "clinc_task_intents",
    "intent_names",
    "load_clinc",
    "load_domains",
    "load_retention",
    "load_retention_if_available",
    "prepare_clinc",
    "prepare_data",
    "prepare_domains",
    "prepare_retention",
    "resolve_cache_dir",
    "split_documents",
]
