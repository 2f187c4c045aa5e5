"""The three plugin registries. In-tree plugins register on import of their package (each
package's ``__init__`` imports its plugin files explicitly); others via entry points."""

from benchmark.registry import Registry

ATTACKS: Registry = Registry("attack", builtin="attacks")
DEFENSES: Registry = Registry("defense", builtin="defenses")
VICTIMS: Registry = Registry("victim", builtin="victims")
