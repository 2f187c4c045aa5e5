"""In-tree defenses; importing this package registers them."""

from defenses import none  # noqa: F401
