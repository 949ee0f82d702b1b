"""`STRATEGY_REGISTRY`: the strategies a run can name, in listing order, and how a name becomes a strategy.

The built-in ones are listed here; `@register_strategy` adds another from anywhere (a plugin, a test) without
editing this package; `ContinualSettings` accepts every registered name.
"""

from .base import Strategy
from .cms import CMSStrategy
from .cms_replay import CMSReplayStrategy
from .ewc import EWCStrategy
from .ffn import FFNStrategy
from .full import FullStrategy
from .joint import JointStrategy
from .lora import LoraStrategy
from .replay import ReplayStrategy

_BUILT_IN = (
    FullStrategy,
    LoraStrategy,
    CMSStrategy,
    FFNStrategy,
    ReplayStrategy,
    EWCStrategy,
    CMSReplayStrategy,
    JointStrategy,
)
STRATEGY_REGISTRY: dict[str, type[Strategy]] = {strategy.name: strategy for strategy in _BUILT_IN}


def register_strategy(strategy: type[Strategy]) -> type[Strategy]:
    """Add `strategy` to the registry under its `name` (usable as a class decorator); a taken name is an error."""
    name = getattr(strategy, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{strategy.__name__} needs a class attribute `name`, the strategy's name in the settings.")
    if name in STRATEGY_REGISTRY:
        raise ValueError(f"A strategy named {name!r} is already registered ({STRATEGY_REGISTRY[name].__name__}).")
    STRATEGY_REGISTRY[name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    """The strategy registered as `name`, else a ValueError listing the known ones."""
    if name not in STRATEGY_REGISTRY:
        raise ValueError(f"Unknown strategy {name!r}: choose one of {', '.join(STRATEGY_REGISTRY)}.")
    return STRATEGY_REGISTRY[name]()
