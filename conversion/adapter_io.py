"""Save and load the CMS adapter alone: its weights (safetensors) and its config (JSON), next to any base model.

Only what the base model cannot restore is written: the new levels, their mixing weights, and the pretrained
FFN too when its level is not frozen. The JSON also describes the base model, so an adapter is refused, with a
message saying why, by a base it was not made for.
"""

import os
import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from ..modeling.cms_adapter_families import Family
from ..modeling.cms_adapter_ffn import RetrofittedFFN, ffn_sites
from .adapter_files import read_adapter_pair, write_adapter_pair
from .base_parameters import changes_outside_adapter, trainable_outside_adapter
from .cms_config import CMS_CONFIG_NAME, CMSConfig
from .cms_ffn import family_of
from .retrofit import retrofit, retrofitted_family, unretrofit


def cms_adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors, keyed `layers.<decoder layer index>.<name inside the FFN>` (wrapper-independent)."""
    family, _ = retrofitted_family(model)
    state = {}
    for site in ffn_sites(model, family):
        ffn = site.ffn
        if not isinstance(ffn, RetrofittedFFN):
            continue
        for name, tensor in ffn.state_dict().items():
            if name.startswith(("cms_levels.", "cms_mixing.")) or ffn.level_tag.period is not None:
                state[f"layers.{site.index}.{name}"] = tensor
    return state


def save_cms_adapter(model: nn.Module, save_directory: str | os.PathLike, ignore_changes_outside: bool = False) -> None:
    """Write `cms_adapter.safetensors` and `cms_adapter_config.json` for the retrofitted `model`.

    The two files are written as one pair (`adapter_files`): an interrupted save leaves the old adapter or the
    new one, never a mix. The folder may also hold a PEFT adapter or a full model.

    The adapter alone would lose any change made outside it, so this refuses (ValueError) when a parameter
    outside the adapter changed since `retrofit`, or became trainable after it. PEFT's weights count as saved
    when the folder already holds the PEFT adapter as it is now (`peft_model.save_pretrained(folder)` first, and
    the `PeftModel` passed here). `ignore_changes_outside=True` saves anyway, for changes saved some other way.
    """
    family, config = retrofitted_family(model)
    directory = Path(save_directory)
    if not ignore_changes_outside:
        _refuse_lost_changes(model, directory)
    tensors = {name: tensor.detach().contiguous() for name, tensor in cms_adapter_state_dict(model).items()}
    write_adapter_pair(directory, tensors, {**config.to_dict(), "base_model": _describe_base(model, family)})


def load_cms_adapter(model: nn.Module, adapter_directory: str | os.PathLike) -> nn.Module:
    """Retrofit the plain `model` as the saved adapter describes and load its weights; returns `model`.

    Refuses, leaving `model` unchanged, an adapter made for another base (model type, layer count, widths) or
    whose tensors do not match what the config builds.
    """
    directory = Path(adapter_directory)
    tensors, saved = read_adapter_pair(directory)
    expected_base = saved.pop("base_model", None)
    if not isinstance(expected_base, dict):
        raise ValueError(
            f"{directory / CMS_CONFIG_NAME} does not describe the base model the adapter was made for (no "
            "'base_model' object): it was not written by save_cms_adapter; save the adapter again."
        )
    family = family_of(model)
    actual_base = _describe_base(model, family)
    if expected_base != actual_base:
        raise ValueError(
            f"The CMS adapter in {directory} was made for another base model: it expects {expected_base}, "
            f"but this model is {actual_base}."
        )
    retrofit(model, CMSConfig.from_dict(saved))
    expected = {name: tensor.shape for name, tensor in cms_adapter_state_dict(model).items()}
    problems = _tensor_problems(expected, {name: tensor.shape for name, tensor in tensors.items()})
    if problems:
        unretrofit(model, merge=False)
        raise ValueError(f"The CMS adapter in {directory} does not fit this model: {'; '.join(problems)}.")
    per_layer: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        _, index, inner_name = name.split(".", 2)
        per_layer.setdefault(int(index), {})[inner_name] = tensor
    sites = ffn_sites(model, family)
    for index, layer_tensors in per_layer.items():
        sites[index].ffn.load_state_dict(layer_tensors, strict=False)  # keys were checked above
    return model


def _refuse_lost_changes(model: nn.Module, directory: Path) -> None:
    """Raise if saving the adapter alone would drop changes made outside it (warn if nothing was recorded)."""
    changes = changes_outside_adapter(model)
    if changes is None:
        if trainable := trainable_outside_adapter(model):
            warnings.warn(
                "save_cms_adapter cannot tell whether the trainable parameter tensors outside the adapter "
                f"({_some(trainable)}) changed: this model was not retrofitted in this process (loaded from "
                "a checkpoint?), so nothing recorded their values. The adapter holds none of them; save the whole "
                "model with model.save_pretrained(folder) if they trained, or freeze them to silence this.",
                stacklevel=3,
            )
        return
    problems = []
    if changes.base:
        problems.append(
            f"parameter tensors of the base model changed since retrofit, or became trainable after it "
            f"({_some(changes.base)}). Save the whole model with model.save_pretrained(folder) "
            "instead, or retrofit with freeze_base=True (the default) so that only the adapter trains"
        )
    if changes.peft and not _peft_adapter_saved(model, directory):
        problems.append(
            f"PEFT parameter tensors changed ({_some(changes.peft)}), and {directory} does not hold them as "
            "they are now. Save the PEFT adapter into that folder first, peft_model.save_pretrained(folder), "
            "then call save_cms_adapter(peft_model, folder) with the same PeftModel"
        )
    if problems:
        raise ValueError(
            "save_cms_adapter writes only the CMS adapter, and saving it alone would lose changes made outside "
            f"it: {'; '.join(problems)}. If you save those changes some other way, pass ignore_changes_outside=True."
        )


def _peft_adapter_saved(model: nn.Module, directory: Path) -> bool:
    """Whether `directory` holds every PEFT adapter of the `PeftModel` `model` exactly as it is now."""
    if "peft" not in sys.modules:
        return False
    from peft import PeftModel, get_peft_model_state_dict

    if not isinstance(model, PeftModel):
        return False
    for adapter_name in model.peft_config:
        path = (directory if adapter_name == "default" else directory / adapter_name) / "adapter_model.safetensors"
        if not path.is_file():
            return False
        saved, current = load_file(path), get_peft_model_state_dict(model, adapter_name=adapter_name)
        if saved.keys() != current.keys() or not all(torch.equal(saved[k], current[k].cpu()) for k in saved):
            return False
    return True


def _some(names: list[str]) -> str:
    return f"{len(names)}: " + ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def _describe_base(model: nn.Module, family: Family) -> dict[str, object]:
    config = model.config
    return {
        "model_type": family.model_type,
        "num_layers": len(ffn_sites(model, family)),
        "hidden_size": config.hidden_size,
        "ffn_width": family.ffn_width(config),
    }


def _tensor_problems(expected: dict[str, torch.Size], found: dict[str, torch.Size]) -> list[str]:
    problems = []
    if missing := sorted(set(expected) - set(found)):
        problems.append(f"missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected := sorted(set(found) - set(expected)):
        problems.append(f"unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for name in sorted(set(expected) & set(found)):
        if expected[name] != found[name]:
            problems.append(f"{name} has shape {tuple(found[name])}, this model needs {tuple(expected[name])}")
    return problems
