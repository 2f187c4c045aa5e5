"""In-tree defenses; importing this package registers them."""

from defenses import (  # noqa: F401
    adaptive_misinformation,
    jitter,
    mad,
    none,
    padding,
    per_class_exit,
    prada,
    random_exit,
    reverse_sigmoid,
    rounding,
    timeguard,
    top1,
)
