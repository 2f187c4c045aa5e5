"""In-tree attacks; importing this package registers them."""

from attacks import esa, knockoff, noise  # noqa: F401, I001
from attacks import ours  # noqa: F401
from attacks import cryptanalytic  # noqa: F401
from attacks import indist_augment, label_only, perturbed_repeats, sybil  # noqa: F401
