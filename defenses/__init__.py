"""In-tree defenses; importing this package registers them."""

from defenses import jitter, none, padding, rounding, top1  # noqa: F401
