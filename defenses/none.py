"""none: the undefended reference."""

from dataclasses import dataclass

from benchmark.api.defense import Defense
from benchmark.plugins import DEFENSES


@DEFENSES.register("none")
@dataclass(frozen=True)
class NoDefense(Defense):
    """Answers exactly as the victim does."""
