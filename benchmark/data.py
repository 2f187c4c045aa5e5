"""Datasets as in-memory uint8 tensors: the victim's task (train/val/test) and the attacker's
query set. Images are stored as uint8 (N, C, H, W) like the real datasets and handed to models as
float in [0, 1]; models normalise internally, so the oracle takes plain images."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from benchmark.registry import Registry


@dataclass(frozen=True)
class Split:
    """One split: uint8 images (N, C, H, W) and long labels (N,)."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4 or len(self.x) != len(self.y):
            raise ValueError("Split needs uint8 images (N, C, H, W) and one label per image")

    def __len__(self) -> int:
        return len(self.x)

    def images(self, idx=None, device: str | torch.device = "cpu") -> Tensor:
        """Float images in [0, 1] (all, or rows ``idx``) on ``device``."""
        x = self.x if idx is None else self.x[idx]
        return x.to(device).float().div_(255.0)

    def subset(self, n: int) -> Split:
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class TaskData:
    """A classification task: the victim owner's data."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


@dataclass(frozen=True)
class DataRequest:
    """Where and how to load data: the root folder, whether downloading is allowed, the seed and
    the input shape the victim wants (real datasets are resized to it)."""

    root: Path
    download: bool = False
    seed: int = 0
    input_shape: tuple[int, int, int] = (3, 32, 32)


#: task name -> loader(DataRequest) -> TaskData
TASKS: Registry[Callable[[DataRequest], TaskData]] = Registry("dataset", builtin="benchmark.datasets")
#: query-set name -> loader(DataRequest) -> Split (labels are the query set's own classes)
QUERY_SETS: Registry[Callable[[DataRequest], Split]] = Registry("query set", builtin="benchmark.datasets")


def to_uint8(x: Tensor) -> Tensor:
    """Float images in [0, 1] to uint8."""
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)
