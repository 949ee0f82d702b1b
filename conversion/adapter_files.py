"""The CMS adapter's two files, written and read as one pair: the weights and the config never come from two saves.

The folder may hold other files (a PEFT adapter, a full model), so it cannot be replaced as a whole. Instead both
files are written in full under staging names that carry a pair token, which each file also records, then renamed
into place, weights first. An interrupted save therefore leaves either the old pair, or the new weights next to
the old config and the new config still under its staging name; the reader then takes that staged config, so it
always sees a whole pair, old or new. A pair that matches neither way is refused with a message saying so.
"""

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .atomic_write import write_safetensors
from .cms_config import CMS_CONFIG_NAME

CMS_WEIGHTS_NAME = "cms_adapter.safetensors"
PAIR_KEY = "pair_token"  # in the config JSON and in the weights' safetensors metadata


def staged_name(name: str, token: str) -> str:
    """The hidden name a file of the pair has while it is written."""
    return f".{name}.pending-{token}"


def write_adapter_pair(directory: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Write `cms_adapter.safetensors` and `cms_adapter_config.json` into `directory` as one pair."""
    directory.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    staged_weights = directory / staged_name(CMS_WEIGHTS_NAME, token)
    staged_config = directory / staged_name(CMS_CONFIG_NAME, token)
    try:
        write_safetensors(tensors, staged_weights, metadata={"format": "pt", PAIR_KEY: token})
        staged_config.write_text(json.dumps({**config, PAIR_KEY: token}, indent=2, sort_keys=True) + "\n")
        os.replace(staged_weights, directory / CMS_WEIGHTS_NAME)
        os.replace(staged_config, directory / CMS_CONFIG_NAME)
    finally:
        staged_weights.unlink(missing_ok=True)
        staged_config.unlink(missing_ok=True)
    for leftover in directory.glob(f".{CMS_CONFIG_NAME}.pending-*"):  # from saves interrupted earlier
        leftover.unlink(missing_ok=True)
    for leftover in directory.glob(f".{CMS_WEIGHTS_NAME}.pending-*"):
        leftover.unlink(missing_ok=True)


def read_adapter_pair(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The adapter's tensors and config (without the pair token), or a clear error naming the file at fault."""
    weights_path, config_path = directory / CMS_WEIGHTS_NAME, directory / CMS_CONFIG_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: {directory} holds no CMS adapter saved by save_cms_adapter."
            )
    tensors, token = _read_weights(weights_path)
    config = _read_config(config_path)
    if config.get(PAIR_KEY) != token:
        staged = directory / staged_name(CMS_CONFIG_NAME, token) if token else None
        if staged is None or not staged.is_file():
            raise ValueError(
                f"{weights_path} and {config_path} come from different saves (an interrupted or mixed copy?): "
                "save the adapter again with save_cms_adapter, or copy both files from one save."
            )
        config = _read_config(staged)  # the save was interrupted between its two renames: its config is whole
    config.pop(PAIR_KEY, None)
    return tensors, config


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    try:
        with safe_open(path, framework="pt") as file:
            token = (file.metadata() or {}).get(PAIR_KEY)
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
        return tensors, token
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); save the adapter again.") from error


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); save the adapter again.") from error
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not the adapter's settings object.")
    return config
