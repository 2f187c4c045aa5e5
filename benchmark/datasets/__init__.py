"""In-tree datasets; importing this package registers them in TASKS and QUERY_SETS."""

from benchmark.datasets import mnist, photos, synthetic, vision  # noqa: F401
