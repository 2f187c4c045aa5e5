"""none: the undefended reference."""

from dataclasses import dataclass

from benchmark.plugins import DEFENSES
from defenses.base import Defense


@DEFENSES.register("none")
@dataclass(frozen=True)
class NoDefense(Defense):
    """Answers exactly as the victim does."""
