"""In-tree attacks; importing this package registers them."""

from attacks import ours  # noqa: F401
