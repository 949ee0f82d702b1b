"""`ContinualSettings`: what a continual fine-tuning run does, in the style of `TrainingArguments`."""

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers.trainer_utils import SchedulerType

from ..conversion.cms_config import INIT_MODES, MIXED_INITS, checked_level_size
from ..modeling.levels import check_lr_scale, check_period
from .strategies import STRATEGY_REGISTRY, get_strategy

STRATEGIES = tuple(STRATEGY_REGISTRY)  # the built-in strategies; registered ones are accepted too
SCHEDULERS = tuple(scheduler.value for scheduler in SchedulerType)  # Trainer's lr_scheduler_type values
# Measured on SmolLM2-135M (code excerpt, scaled to batches of 8 x 256 tokens; lr 1e-4): the per-batch Fisher sums
# to about 10 over 135M parameters. At 1e5 a drift of 1e-3 everywhere costs about 0.5 nats; the top 1% of the
# Fisher's coordinates are pulled back as hard as the new task pushes them once they drift about 6e-3 (within one
# task's Adam drift); the median coordinate feels a pull 400 times weaker than the task's gradient, so it still learns.
EWC_LAMBDA_DEFAULT = 1e5


def check_int(name: str, value: Any, minimum: int = 1, note: str = "") -> int:
    """`value` if it is an int >= `minimum` (not a bool), else a ValueError naming the setting."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid: it must be an int >= {minimum}{f' ({note})' if note else ''}.")
    return value


def check_number(name: str, value: Any, *, positive: bool = False, note: str = "") -> float:
    """`value` if it is a finite number > 0 (`positive`) or >= 0, else a ValueError naming the setting."""
    valid = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not valid or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(
            f"{name}={value!r} is invalid: it must be a finite number {bound}{f' ({note})' if note else ''}."
        )
    return value


def check_strategy(name: str) -> str:
    """`name` if it is a registered strategy (built in or added with `register_strategy`), else a ValueError."""
    get_strategy(name)
    return name


@dataclass
class ContinualSettings:
    """The settings of one continual fine-tuning run; a run folder is tied to them (resume refuses a change).

    Every strategy gets the same token budget per task: `steps_per_task * batch_size * block_size` training tokens
    (full batches only). `joint` trains once on the union of all tasks for `num_tasks * steps_per_task` steps.
    """

    strategy: str = field(default="full", metadata={"help": f"how the model learns the tasks: one of {STRATEGIES}"})
    steps_per_task: int = field(default=128, metadata={"help": "optimizer steps per task (the token budget)"})
    batch_size: int = field(default=8, metadata={"help": "training blocks per optimizer step"})
    block_size: int = field(default=256, metadata={"help": "tokens per block (texts are concatenated and cut)"})
    learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "peak learning rate of AdamW; None: the strategy's default (1e-4 for full, replay, ewc and joint, "
            "1e-3 for lora; for cms, ffn and cms+replay by cms_init: 1e-3 units, 3e-4 copy, 1e-3 lowrank and zero)"
        },
    )
    lr_scheduler_type: str = field(
        default="constant", metadata={"help": "Trainer learning-rate schedule within each task"}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 disables)"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank (strategy lora)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (strategy lora)"})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "module names LoRA wraps; None: every linear projection inside the attention blocks"},
    )
    cms_periods: list[int] = field(
        default_factory=lambda: [16, 1],
        metadata={"help": "periods of the new CMS levels, slowest first (the pretrained FFN stays frozen)"},
    )
    cms_width: int = field(default=128, metadata={"help": "hidden width of each new CMS level (cms_init zero)"})
    cms_rank: int = field(default=8, metadata={"help": "rank of each new CMS level (cms_init lowrank)"})
    cms_units: float = field(
        default=0.08,
        metadata={
            "help": "hidden units of the pretrained FFN each new CMS level copies (cms_init units): a count, or a "
            "share of the FFN's width in (0, 1)"
        },
    )
    cms_init: str = field(
        default="units",
        metadata={
            "help": "units: each new level a copy of cms_units of the pretrained FFN's hidden units (the "
            "highest-scoring), mixed with it (forgets as little as copy in the domain benchmark, for a twelfth of "
            "the parameters); copy: each new level starts as a copy of the pretrained FFN, mixed with it; zero: "
            "narrow new levels whose output starts at zero; lowrank: each new level a rank-cms_rank change of "
            "every projection of the pretrained FFN, starting at zero"
        },
    )
    cms_consolidate: bool = field(
        default=False,
        metadata={
            "help": "after each task, fold the fastest CMS level into the next slower one (exactly) and restart it "
            "from zero, so that what a task taught survives in the slower level (needs two or more cms_periods)"
        },
    )
    cms_lr_scales: list[float] | None = field(
        default=None,
        metadata={"help": "learning-rate scale of each new CMS level, slowest first (None: 1.0 for every level)"},
    )
    replay_fraction: float = field(
        default=0.25,
        metadata={
            "help": "strategies replay and cms+replay: the share of every batch replayed from earlier tasks, on top "
            "of the batch_size new-task blocks (so every strategy trains on the same new-task tokens)"
        },
    )
    replay_buffer_blocks: int = field(
        default=1024,
        metadata={
            "help": "strategies replay and cms+replay: the most earlier-task blocks (examples, for labelled tasks) "
            "the replay buffer keeps, reservoir-sampled over the stream"
        },
    )
    ewc_lambda: float = field(
        default=EWC_LAMBDA_DEFAULT,
        metadata={
            "help": "strategy ewc: the weight of the penalty (lambda / 2) * sum F (theta - theta*)^2; F is a per-batch "
            "empirical Fisher, whose entries shrink as the model grows: the default suits SmolLM2-135M, a model of "
            "a few thousand parameters needs about 1e3"
        },
    )
    ewc_fisher_batches: int = field(
        default=16,
        metadata={"help": "strategy ewc: training batches of each finished task that estimate its diagonal Fisher"},
    )
    seed: int = field(default=0, metadata={"help": "seed; task i trains with seed + i"})
    eval_batch_size: int = field(default=8, metadata={"help": "validation blocks per forward pass"})
    max_eval_blocks: int | None = field(
        default=64, metadata={"help": "cap on validation blocks per task (None: all of them)"}
    )
    keep_task_models: bool = field(
        default=True, metadata={"help": "keep run_dir/task_i for every task, not only the latest (for resume)"}
    )
    use_cpu: bool = field(default=False, metadata={"help": "train and evaluate on the CPU even if a GPU is there"})

    def __post_init__(self) -> None:
        check_strategy(self.strategy)
        names = ("steps_per_task", "batch_size", "lora_rank", "lora_alpha", "cms_width", "cms_rank", "eval_batch_size")
        for name in (*names, "replay_buffer_blocks", "ewc_fisher_batches"):
            check_int(name, getattr(self, name))
        check_int("block_size", self.block_size, 2, "a block needs at least 2 tokens")
        check_int("seed", self.seed, 0)
        if self.max_eval_blocks is not None:
            check_int("max_eval_blocks", self.max_eval_blocks, 1, "or None for all of them")
        check_number("weight_decay", self.weight_decay)
        check_number("max_grad_norm", self.max_grad_norm, note="0 disables clipping")
        check_number("ewc_lambda", self.ewc_lambda)
        if not (isinstance(self.replay_fraction, int | float) and 0 < self.replay_fraction < 1):
            raise ValueError(
                f"replay_fraction={self.replay_fraction!r} is invalid: it must be a number in (0, 1), the share of "
                "every batch that is replayed."
            )
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ValueError(
                f"lr_scheduler_type={self.lr_scheduler_type!r} is unknown: choose one of {', '.join(SCHEDULERS)}."
            )
        self.cms_periods = list(self.cms_periods)
        if not self.cms_periods:
            raise ValueError("cms_periods=[] is invalid: give the period of one or more new CMS levels.")
        for index, period in enumerate(self.cms_periods):
            check_period(period, f"cms_periods[{index}]: ", frozen_allowed=False)
        if self.cms_init not in INIT_MODES:
            raise ValueError(f"cms_init={self.cms_init!r} is unknown: choose one of {', '.join(INIT_MODES)}.")
        self.cms_units = checked_level_size("cms_units", self.cms_units)
        if self.cms_consolidate and (len(self.cms_periods) < 2 or self.cms_init in MIXED_INITS):
            raise ValueError(
                "cms_consolidate needs at least two cms_periods (a fast level to fold into a slower one) and "
                f"cms_init='zero' or 'lowrank'; got cms_periods={self.cms_periods} and cms_init={self.cms_init!r}."
            )
        if self.cms_lr_scales is not None:
            if len(self.cms_lr_scales) != len(self.cms_periods):
                raise ValueError(
                    f"cms_lr_scales={self.cms_lr_scales!r} is invalid: give one positive scale per CMS period "
                    f"({len(self.cms_periods)}), slowest first, or None."
                )
            self.cms_lr_scales = [
                check_lr_scale(scale, f"cms_lr_scales[{index}]: ") for index, scale in enumerate(self.cms_lr_scales)
            ]
        if self.lora_target_modules is not None:
            self.lora_target_modules = list(self.lora_target_modules)
        if self.learning_rate is None:  # after the checks: a strategy's default may read its settings
            self.learning_rate = get_strategy(self.strategy).default_learning_rate(self)
        check_number("learning_rate", self.learning_rate, positive=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
