"""none: the undefended reference."""

from dataclasses import dataclass
from typing import ClassVar

from benchmark.api.defense import Defense
from benchmark.plugins import DEFENSES


@DEFENSES.register("none")
@dataclass(frozen=True)
class NoDefense(Defense):
    """Answers exactly as the victim does."""

    zero_options: ClassVar[dict] = {}  # it is its own zero setting
