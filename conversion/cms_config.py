"""`CMSConfig`: the CMS adapter's settings, as users build them, and how they are written next to an adapter.

The settings and their checks are model-side (`hf_hope.modeling.cms_adapter_config`), since a retrofitted model
rebuilds its levels from them when loaded; writing files is not, so it is added here, with the atomic-write helper.
"""

import json
import os
from pathlib import Path
from typing import Any

from ..modeling.cms_adapter_config import INIT_MODES, MIXED_INITS, CMSAdapterConfig, checked_level_size
from .atomic_write import write_text_atomically

__all__ = ["CMS_CONFIG_NAME", "INIT_MODES", "MIXED_INITS", "CMSConfig", "checked_level_size"]

CMS_CONFIG_NAME = "cms_adapter_config.json"


class CMSConfig(CMSAdapterConfig):
    """How to retrofit a pretrained model's FFNs into a Continuum Memory System (fields: `CMSAdapterConfig`)."""

    def save_pretrained(self, save_directory: str | os.PathLike, **extra: Any) -> None:
        """Write `cms_adapter_config.json` (with any `extra` entries, such as the base model's description)."""
        path = Path(save_directory) / CMS_CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps({**self.to_dict(), **extra}, indent=2, sort_keys=True) + "\n")
