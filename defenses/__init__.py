"""In-tree defenses; importing this package registers them."""

from defenses import (  # noqa: F401
    adaptive_misinformation,
    exit_policy,
    jitter,
    mad,
    none,
    padding,
    prada,
    reverse_sigmoid,
    rounding,
    timeguard,
    top1,
)
