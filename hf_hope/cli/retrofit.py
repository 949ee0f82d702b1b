"""`hf-hope retrofit`: a saved model in, the same model with CMS levels on its FFNs out (or the CMS adapter alone)."""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from transformers import AutoModelForCausalLM, AutoTokenizer

from ..continual.settings import check_int
from ..conversion.adapter_io import save_cms_adapter
from ..conversion.atomic_write import write_folder
from ..conversion.cms_config import INIT_MODES, CMSConfig
from ..conversion.retrofit import retrofit
from ..data.progress import library_bars_hidden
from ..model_card import write_model_card


@dataclass
class RetrofitSettings:
    """What `hf-hope retrofit` reads, which CMS levels it adds, and where it writes the result."""

    model: str = field(metadata={"help": "folder of the pretrained causal LM (save_pretrained format)"})
    output_dir: str = field(metadata={"help": "folder the retrofitted model (or adapter) is written to"})
    periods: list[int] = field(
        default_factory=lambda: [16, 1],
        metadata={"help": "update periods of the new levels, slowest first (the pretrained FFN stays frozen)"},
    )
    width: int = field(default=128, metadata={"help": "hidden width of each new level (init zero)"})
    rank: int = field(default=8, metadata={"help": "rank of each new level (init lowrank)"})
    units: float = field(
        default=0.08,
        metadata={"help": "hidden units each new level copies (init units): a count, or a share of the FFN in (0, 1)"},
    )
    init: Literal[INIT_MODES] = field(
        default="units",
        metadata={
            "help": "units: each new level a copy of the FFN's highest-scoring hidden units, mixed with it; zero: "
            "new narrow levels whose output starts at zero; copy: levels copy the FFN; lowrank: each level a "
            "low-rank change of the FFN's projections, starting at zero"
        },
    )
    layers: str | None = field(
        default=None,
        metadata={"help": "decoder layers to retrofit: None for all, indices like 0,1,2, or a regex on module names"},
    )
    cms_config: str | None = field(
        default=None,
        metadata={
            "help": "JSON file of CMSConfig fields (levels, init, intermediate_size, rank, units, layers); replaces "
            "the six flags above"
        },
    )
    adapter_only: bool = field(
        default=False, metadata={"help": "write only the CMS adapter (cms_adapter.safetensors + config)"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace output_dir if it exists and is not empty"})

    def __post_init__(self) -> None:
        check_int("width", self.width)
        check_int("rank", self.rank)
        self.cms()  # a bad level or config file stops the command before the model is loaded

    def cms(self) -> CMSConfig:
        """The CMSConfig the settings describe (from the JSON file when one is given)."""
        if self.cms_config:
            path = Path(self.cms_config)
            if not path.is_file():
                raise FileNotFoundError(f"CMS config file {path} does not exist.")
            try:
                values = json.loads(path.read_text())
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON: {error}.") from None
            if not isinstance(values, dict):
                raise ValueError(f"{path} must hold a JSON object of CMSConfig fields, not {type(values).__name__}.")
            try:
                return CMSConfig.from_dict(values)
            except (TypeError, ValueError) as error:
                raise ValueError(f"{path}: {error}") from None
        return CMSConfig.from_periods(
            self.periods,
            init=self.init,
            intermediate_size=self.width,
            rank=self.rank,
            units=self.units,
            layers=parse_layers(self.layers),
        )


def parse_layers(layers: str | None) -> list[int] | str | None:
    """`"0,1,2"` -> `[0, 1, 2]`; anything else is a regular expression (None: every layer)."""
    if layers is None or not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", layers):
        return layers
    return [int(index) for index in layers.split(",")]


def run_retrofit(settings: RetrofitSettings) -> Path:
    """`hf-hope retrofit`: load, retrofit, save with the tokenizer and a model card, atomically."""
    config = settings.cms()
    if not (Path(settings.model) / "config.json").is_file():
        raise FileNotFoundError(
            f"{settings.model} holds no config.json: give --model a folder saved with save_pretrained (or made by "
            "`hf-hope convert-gguf`)."
        )
    with library_bars_hidden():  # no bar for the weights loaded and the shards written
        model = retrofit(AutoModelForCausalLM.from_pretrained(settings.model), config)
    tokenizer = None
    if (Path(settings.model) / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(settings.model)
    start = {
        "zero": "The new levels start at zero, so the model computes exactly what the base model computes",
        "copy": "Every level starts as a copy of the pretrained FFN, mixed uniformly, so the model computes what "
        "the base model computes",
        "lowrank": "Each new level is a low-rank change of the pretrained FFN's projections that starts at zero, so "
        "the model computes exactly what the base model computes",
        "units": "Each new level is a copy of some of the pretrained FFN's hidden units, mixed with them, so the "
        "model computes exactly what the base model computes",
    }[config.init]

    def write(folder: Path) -> None:
        if settings.adapter_only:
            save_cms_adapter(model, folder)
        else:
            model.save_pretrained(folder)
            if tokenizer is not None:
                tokenizer.save_pretrained(folder)
        write_model_card(
            folder,
            base_model=settings.model,
            model_name=f"{Path(settings.model).resolve().name} with CMS levels",
            data_description=f"Not trained yet. {start}; train the levels with hf_hope.LevelClockCallback.",
            repo_id=settings.output_dir,
        )

    with library_bars_hidden():
        output_dir = write_folder(settings.output_dir, write, overwrite=settings.overwrite)
    what = "CMS adapter" if settings.adapter_only else "retrofitted model"
    periods = [level["period"] for level in config.levels]
    print(f"Wrote the {what} (level periods {periods}, slowest first) and its model card to {output_dir}")
    return output_dir
