"""The parameters outside the CMS adapter: freeze them, and notice when they change after `retrofit`.

`save_cms_adapter` writes the adapter only, so anything else that trains is lost unless it is saved another way.
`retrofit` records a fingerprint (shape, dtype and checksums) of each parameter outside the adapter that is still
trainable once the base is frozen: a few integers per tensor, and none at all on a frozen base.
Parameters PEFT owns (LoRA weights, `modules_to_save` copies) stay as PEFT left them and are told apart, since
PEFT's own `save_pretrained` saves them.
"""

import sys
from typing import NamedTuple

import torch
from torch import nn
from transformers import PreTrainedModel

from ..modeling.cms_adapter_ffn import RetrofittedFFN

FINGERPRINTS_ATTRIBUTE = "_cms_base_fingerprints"
FROZEN_ATTRIBUTE = "_cms_frozen_base"
_CASTS = (torch.float32, torch.bfloat16, torch.float16)  # what a model is commonly cast to after retrofit


class Fingerprint(NamedTuple):
    """What is kept of one parameter: its shape, dtype and checksum, and the checksums of its casts to coarser
    common dtypes (so that `model.to(torch.bfloat16)` is not a change). A few integers, not the values."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    checksums: dict[torch.dtype, int]


class OutsideChanges(NamedTuple):
    """Names of parameters outside the adapter that changed since `retrofit` or became trainable after it."""

    base: list[str]
    peft: list[str]


def checksum(values: torch.Tensor) -> int:
    """The tensor's bytes added up as 64-bit integers, wrapping around, on its own device.

    Integer sums are exact and do not depend on the order of summation, so the checksum is the same on every
    device and thread count, and changing any one element changes it.
    """
    raw = values.detach().reshape(-1).view(torch.uint8)
    if raw.storage_offset() % 8:
        raw = raw.clone()
    whole = raw.numel() // 8 * 8
    return raw[:whole].view(torch.int64).sum().item() + int.from_bytes(raw[whole:].tolist(), "little")


def fingerprint(parameter: torch.Tensor) -> Fingerprint:
    """The checksum of `parameter`, and of its casts to each coarser dtype of `_CASTS`."""
    values = parameter.detach()
    checksums = {values.dtype: checksum(values)}
    if values.is_floating_point():
        for dtype in _CASTS:
            if torch.finfo(dtype).bits < torch.finfo(values.dtype).bits:
                checksums[dtype] = checksum(values.to(dtype))
    return Fingerprint(tuple(values.shape), values.dtype, checksums)


def unchanged(recorded: Fingerprint, parameter: torch.Tensor) -> bool:
    """Whether `parameter` holds the recorded values, possibly moved to another device or cast to another dtype.

    After a cast to a coarser dtype it must equal the recorded values cast alike; after a cast to a finer one,
    cast back it must equal them. Either way a change smaller than the cast's rounding goes unnoticed.
    """
    values = parameter.detach()
    if tuple(values.shape) != recorded.shape:
        return False
    if values.dtype in recorded.checksums:
        return checksum(values) == recorded.checksums[values.dtype]
    floating = values.is_floating_point() and recorded.dtype.is_floating_point
    if floating and torch.finfo(values.dtype).bits > torch.finfo(recorded.dtype).bits:
        return checksum(values.to(recorded.dtype)) == recorded.checksums[recorded.dtype]
    return False


def adapter_parameter_ids(model: nn.Module) -> set[int]:
    """Ids of the parameters `save_cms_adapter` writes: new levels, mixing weights, and unfrozen pretrained FFNs."""
    ids = set()
    for module in model.modules():
        if not isinstance(module, RetrofittedFFN):
            continue
        ids.update(id(parameter) for parameter in module.cms_levels.parameters())
        if module.cms_mixing is not None:
            ids.update(id(parameter) for parameter in module.cms_mixing.parameters())
        if module.level_tag.period is not None:
            ids.update(id(parameter) for _, parameter in module.pretrained_parameters())
    return ids


def peft_parameter_ids(model: nn.Module) -> set[int]:
    """Ids of the parameters PEFT owns: its tuner layers' adapter weights and its `modules_to_save` copies."""
    if "peft" not in sys.modules:  # a model can hold PEFT layers only once peft is imported
        return set()
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    owned: list[nn.Module] = []
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            owned += [getattr(module, name) for name in module.adapter_layer_names if hasattr(module, name)]
        elif isinstance(module, ModulesToSaveWrapper):
            owned.append(module.modules_to_save)
    return {id(parameter) for part in owned if isinstance(part, nn.Module) for parameter in part.parameters()}


def freeze_outside_adapter(model: nn.Module) -> None:
    """Stop training every parameter outside the CMS adapter, except those PEFT owns (left as PEFT set them).

    The names of the parameters it froze are kept, so that `release_base` (called by `unretrofit`) unfreezes them.
    """
    anchor = _transformers_model(model)
    keep = adapter_parameter_ids(anchor) | peft_parameter_ids(anchor)
    frozen = []
    for name, parameter in anchor.named_parameters():
        if parameter.requires_grad and id(parameter) not in keep:
            parameter.requires_grad_(False)
            frozen.append(name)
    setattr(anchor, FROZEN_ATTRIBUTE, frozen)


def release_base(model: nn.Module) -> None:
    """Undo `freeze_outside_adapter` and forget the fingerprints: the model is no longer retrofitted."""
    anchor = _transformers_model(model)
    frozen = set(anchor.__dict__.pop(FROZEN_ATTRIBUTE, ()))
    anchor.__dict__.pop(FINGERPRINTS_ATTRIBUTE, None)
    for name, parameter in anchor.named_parameters():
        if name in frozen:
            parameter.requires_grad_(True)


def record_fingerprints(model: nn.Module) -> None:
    """Fingerprint every trainable parameter outside the adapter, on the transformers model inside `model`."""
    anchor = _transformers_model(model)
    adapter = adapter_parameter_ids(anchor)
    fingerprints = {
        name: fingerprint(parameter)
        for name, parameter in anchor.named_parameters()
        if parameter.requires_grad and id(parameter) not in adapter and not parameter.is_meta
    }
    setattr(anchor, FINGERPRINTS_ATTRIBUTE, fingerprints)


def changes_outside_adapter(model: nn.Module) -> OutsideChanges | None:
    """What changed outside the adapter since `retrofit`, or `None` if no `retrofit` in this process recorded it.

    A recorded parameter counts when its values moved; a parameter outside the adapter that was not recorded counts
    when it is trainable now, since nothing says it is unchanged. Parameters renamed by a wrapper applied after
    `retrofit` (PEFT's `base_layer`) are found again by their checksum.
    """
    anchor = _transformers_model(model)
    recorded: dict[str, Fingerprint] | None = getattr(anchor, FINGERPRINTS_ATTRIBUTE, None)
    if recorded is None:
        return None
    adapter = adapter_parameter_ids(anchor)
    current = {name: p for name, p in anchor.named_parameters() if id(p) not in adapter and not p.is_meta}
    changed = [name for name, fp in recorded.items() if name in current and not unchanged(fp, current[name])]
    unrecorded = {name: parameter for name, parameter in current.items() if name not in recorded}
    gone = {name: fp for name, fp in recorded.items() if name not in current}
    shapes = {fp.shape for fp in gone.values()}
    candidates = {
        name: (tuple(p.shape), p.dtype, checksum(p)) for name, p in unrecorded.items() if tuple(p.shape) in shapes
    }
    for name, fp in gone.items():
        match = next(
            (
                other
                for other, (shape, dtype, sum_) in candidates.items()
                if (shape, sum_) == (fp.shape, fp.checksums.get(dtype))
            ),
            None,
        )
        if match is None:
            changed.append(name)
        else:
            del candidates[match], unrecorded[match]
    changed += [name for name, parameter in unrecorded.items() if parameter.requires_grad]
    peft = peft_parameter_ids(anchor)
    owned = [name for name in changed if name in current and id(current[name]) in peft]
    return OutsideChanges(base=[name for name in changed if name not in owned], peft=owned)


def trainable_outside_adapter(model: nn.Module) -> list[str]:
    """Names of the trainable parameters outside the adapter (what nothing recorded when `retrofit` did not run)."""
    adapter = adapter_parameter_ids(model)
    return [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in adapter]


def _transformers_model(model: nn.Module) -> nn.Module:
    """The outermost `PreTrainedModel` in `model` (inside any PEFT wrapper), where parameter names do not depend
    on whether the caller passes the wrapper or the model; `model` itself when there is none."""
    return next((module for module in model.modules() if isinstance(module, PreTrainedModel)), model)
