"""Model cards (README.md) for saved hf_hope models, rendered from the packaged `model_card_template.md`.

`write_model_card(folder, ...)` reads what the folder holds (a HOPE model, a model retrofitted with the CMS adapter,
a CMS adapter alone, a PEFT LoRA adapter or a plain model), fills the template with its base model, architecture,
memory levels (number, period and learning-rate scale of each), data, results and figures, and a snippet that loads it,
then writes `folder/README.md` atomically. The card's metadata is a `huggingface_hub.ModelCardData`.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .conversion.atomic_write import write_text_atomically
from .conversion.cms_config import CMS_CONFIG_NAME

TEMPLATE_NAME = "model_card_template.md"
# The one template is the repository root's: the wheel ships it as hf_hope/templates/, a source tree has it beside.
_WHEEL_TEMPLATE = Path(__file__).parent / "templates" / TEMPLATE_NAME
_SOURCE_TEMPLATE = Path(__file__).parents[1] / TEMPLATE_NAME
TEMPLATE_PATH = _WHEEL_TEMPLATE if _WHEEL_TEMPLATE.is_file() else _SOURCE_TEMPLATE
CARD_NAME = "README.md"
PEFT_CONFIG_NAME = "adapter_config.json"
BASE_TAGS = ("hf_hope", "nested-learning")
_LOAD_WITH_AUTO_MODEL = (
    'from transformers import AutoModelForCausalLM\n\nmodel = AutoModelForCausalLM.from_pretrained("{repo_id}")'
)
# The "How to load it" snippet of each kind of folder; {repo_id} is where it is, {base} the base model of an adapter.
LOAD_CODE = {
    "lora": (
        "import hf_hope  # needed when the base model is a HOPE or retrofitted model\n"
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM\n\n"
        'base = AutoModelForCausalLM.from_pretrained("{base}")\n'
        'model = PeftModel.from_pretrained(base, "{repo_id}")'
    ),
    "cms_adapter": (
        "import hf_hope\n"
        "from transformers import AutoModelForCausalLM\n\n"
        'base = AutoModelForCausalLM.from_pretrained("{base}")\n'
        'model = hf_hope.load_cms_adapter(base, "{repo_id}")'
    ),
    "retrofitted": "import hf_hope  # registers the CMS-adapter model types with AutoModelForCausalLM\n"
    + _LOAD_WITH_AUTO_MODEL,
    "hope": "import hf_hope  # optional: without it, pass trust_remote_code=True\n" + _LOAD_WITH_AUTO_MODEL,
    "plain": _LOAD_WITH_AUTO_MODEL,
}


@dataclass
class FolderDescription:
    """What a saved folder holds, as the model card tells it."""

    kind: str  # a key of LOAD_CODE: "hope", "retrofitted", "cms_adapter", "lora" or "plain"
    architecture: str
    levels: list[dict[str, Any]] = field(default_factory=list)
    base_model: str | None = None  # the base a LoRA adapter was saved over, as PEFT recorded it
    tags: list[str] = field(default_factory=list)
    library_name: str = "transformers"  # the library that loads it, for the card's metadata


def describe_folder(folder: str | Path) -> FolderDescription:
    """Read `folder`'s config files (no weights) and say what kind of model it is and which levels it has."""
    folder = Path(folder)
    if (folder / PEFT_CONFIG_NAME).is_file():
        adapter = json.loads((folder / PEFT_CONFIG_NAME).read_text())
        targets = adapter.get("target_modules") or []
        targets = sorted(targets) if isinstance(targets, list) else [str(targets)]
        architecture = (
            f"{adapter.get('peft_type', 'PEFT')} adapter (rank {adapter.get('r')}, alpha {adapter.get('lora_alpha')}) "
            f"on {len(targets)} modules of the base model"
        )
        base_model = adapter.get("base_model_name_or_path")
        return FolderDescription("lora", architecture, base_model=base_model, tags=["lora"], library_name="peft")
    if (folder / CMS_CONFIG_NAME).is_file() and not (folder / "config.json").is_file():
        adapter = json.loads((folder / CMS_CONFIG_NAME).read_text())
        return FolderDescription(
            "cms_adapter",
            "CMS adapter alone (the new levels of a retrofitted model; load it over its base model)",
            levels=numbered_levels(adapter["levels"]),
            tags=["cms-adapter"],
        )
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} holds no config.json, {PEFT_CONFIG_NAME} or {CMS_CONFIG_NAME}: no model.")
    config = json.loads(config_path.read_text())
    model_type = config.get("model_type", "unknown")
    if model_type == "hope":
        layers = config.get("num_hidden_layers")
        return FolderDescription(
            "hope",
            f"HOPE (self-modifying Titans + Continuum Memory System), {layers} layers, hidden size "
            f"{config.get('hidden_size')}",
            levels=numbered_levels(config.get("cms_levels") or []),
            tags=["hope"],
        )
    if config.get("cms_adapter"):
        adapter = config["cms_adapter"]
        return FolderDescription(
            "retrofitted",
            f"{_architecture_name(config)} with every selected FFN retrofitted into a Continuum Memory System "
            f"(CMS adapter, init {adapter.get('init')!r})",
            levels=numbered_levels(adapter["levels"]),
            tags=["cms-adapter"],
        )
    return FolderDescription("plain", _architecture_name(config))


def numbered_levels(levels: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Levels as the card lists them: numbered from 1 in the order the config lists them, as `parameter_levels` does."""
    return [
        {"level": index + 1, "period": level.get("period"), "lr_scale": level.get("lr_scale", 1.0)}
        for index, level in enumerate(levels)
    ]


def load_code(description: FolderDescription, repo_id: str) -> str:
    """Python that loads the folder, for the card's "How to load it" section."""
    base = description.base_model or "path/to/the/base/model"
    return LOAD_CODE[description.kind].format(repo_id=repo_id, base=base)


def render_model_card(
    folder: str | Path,
    *,
    base_model: str | None = None,
    model_name: str | None = None,
    data_description: str | None = None,
    results_table: str | None = None,
    figures: Sequence[tuple[str, str]] = (),
    repo_id: str | None = None,
    tags: Sequence[str] = (),
) -> ModelCard:
    """The model card of the saved model in `folder` (not written; see `write_model_card`).

    `figures` are (caption, path) pairs shown as markdown images; a path relative to `folder` keeps the card and its
    figures readable wherever the run folder is copied.
    """
    description = describe_folder(folder)
    base_model = base_model or description.base_model
    repo_id = repo_id or str(folder)
    card_data = ModelCardData(
        base_model=base_model,
        library_name=description.library_name,
        tags=list(dict.fromkeys([*BASE_TAGS, *description.tags, *tags])),
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name or Path(folder).resolve().name,
        base_model=base_model,
        architecture=description.architecture,
        levels=description.levels,
        data_description=data_description,
        results_table=results_table,
        figures=[{"caption": caption, "path": path} for caption, path in figures],
        repo_id=repo_id,
        load_code=load_code(description, repo_id),
    )


def write_model_card(folder: str | Path, **card: Any) -> Path:
    """Render the card of `folder` (see `render_model_card` for the arguments) into `folder/README.md`, atomically."""
    path = Path(folder) / CARD_NAME
    text = str(render_model_card(folder, **card))
    write_text_atomically(path, text + ("" if text.endswith("\n") else "\n"))
    return path


def _architecture_name(config: dict[str, Any]) -> str:
    architectures = config.get("architectures") or [config.get("model_type", "unknown")]
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    return f"{architectures[0]} ({config.get('model_type')}, {layers} layers)"
