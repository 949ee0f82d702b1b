"""A damaged weights file met by `from_pretrained` is reported with the folder it came from, not as a bare error.

safetensors raises `SafetensorError` ("header too large", "incomplete metadata") without saying which file; a
user with several checkpoints needs the folder to know what to save or copy again.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from safetensors import SafetensorError


@contextmanager
def weights_named_on_error(source: object) -> Iterator[None]:
    """Within the block, a `SafetensorError` becomes a ValueError naming `source` (the folder being loaded)."""
    try:
        yield
    except SafetensorError as error:
        raise ValueError(
            f"The weights in {source} cannot be read ({error}): a safetensors file there is damaged or truncated. "
            "Save or copy the model again."
        ) from error
