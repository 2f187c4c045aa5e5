"""The one exception type the CLI turns into a one-line error (no traceback)."""


class StealBenchError(Exception):
    """A user-facing error: bad flag, bad option, bad file. Its message is one line."""


class ConfigError(StealBenchError):
    """A configuration value or option is invalid."""


class BudgetExceeded(StealBenchError):
    """An attack asked the oracle for more queries than its budget allows."""
