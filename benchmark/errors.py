"""The one exception type the CLI turns into a one-line error (no traceback), the oracle's
query errors, and ``show``, how an error message quotes a value the user gave."""

from __future__ import annotations

import reprlib
from typing import Any

#: the longest quotation of a user's value in an error message (characters)
SHOW_LIMIT = 80

_repr = reprlib.Repr()
_repr.maxstring = SHOW_LIMIT
_repr.maxother = SHOW_LIMIT
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


def show(value: Any, limit: int = SHOW_LIMIT) -> str:
    """``repr(value)``, shortened reprlib-style to at most ``limit`` characters and one line, for
    quoting user input in error messages (a 80 MB list must not become an 80 MB error line)."""
    try:
        text = _repr.repr(value)
    except Exception:  # a value whose repr fails is still quoted somehow
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(text: str, limit: int = 200) -> str:
    """The first line of ``text``, at most ``limit`` characters (for messages of other libraries)."""
    lines = str(text).strip().splitlines()
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[:limit - 3] + "..."


class StealBenchError(Exception):
    """A user-facing error: bad flag, bad option, bad file. Its message is one line."""


class ConfigError(StealBenchError):
    """A configuration value or option is invalid."""


class BudgetExceeded(StealBenchError):
    """An attack asked the oracle for more queries than its budget allows."""


class InvalidQuery(ValueError):
    """A batch the oracle refuses (empty, wrong shape, non-finite or out-of-range values); nothing
    of it is answered or charged to the budget."""


class InvalidQueryType(TypeError):
    """A query batch that is not a tensor of a dtype the oracle accepts; nothing is charged."""


class AccountRefused(PermissionError):
    """The service refuses this account from now on (a detection defense raised an alarm); the
    refused batch was charged to the budget like any other request."""
