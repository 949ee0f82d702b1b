"""When progress bars show: hf_hope's own in a terminal only, the libraries' per-file ones never during our saves.

hf_hope's bars (one per training run, data preparation) follow transformers' switch
(`transformers.utils.logging.disable_progress_bar()`) and otherwise hide themselves where stderr is not a terminal
(tqdm's `disable=None`), so logs get no carriage returns or escape codes. transformers', huggingface_hub's and
`datasets`' own bars (a model's weights loaded, each shard written, each dataset saved) say nothing a user acts on;
`library_bars_hidden()` turns them off around such calls. It lives here, in the lowest layer that shows bars.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import datasets
from transformers.utils import logging


def bar_disabled() -> bool | None:
    """tqdm's `disable` for hf_hope's bars: True when transformers' bars are off, else None (off unless a terminal)."""
    return True if not logging.is_progress_bar_enabled() else None


@contextmanager
def library_bars_hidden(hidden: bool = True) -> Iterator[None]:
    """Within the block, transformers', huggingface_hub's and `datasets`' progress bars are off (when `hidden`).

    The previous state is restored afterwards, so callers that turned the bars off themselves keep them off.
    """
    transformers_on, datasets_on = logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    if hidden:
        logging.disable_progress_bar()
        if datasets_on:
            datasets.disable_progress_bars()
    try:
        yield
    finally:
        if hidden and transformers_on:
            logging.enable_progress_bar()
        if hidden and datasets_on:
            datasets.enable_progress_bars()
