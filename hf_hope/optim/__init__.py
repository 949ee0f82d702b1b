"""Deep optimizers of Nested Learning: momentum as an associative memory (DeepMomentum, DeltaMomentum) and M3."""

from .deep_optimizers import DeepMomentum, DeltaMomentum
from .m3 import M3
from .newton_schulz import newton_schulz

__all__ = ["M3", "DeepMomentum", "DeltaMomentum", "newton_schulz"]
