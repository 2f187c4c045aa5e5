"""In-tree victims; importing this package registers them."""

from victims import sdn_tiny  # noqa: F401
