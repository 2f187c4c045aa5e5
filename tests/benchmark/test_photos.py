"""Query set ``photos``: fixed gray crops of scikit-image's bundled photographs."""

from pathlib import Path

import torch

from benchmark.closeness import split_query_heldout
from benchmark.data import QUERY_SETS, DataRequest
from benchmark.datasets import photos


def _load(shape=(3, 32, 32)):
    return QUERY_SETS["photos"](DataRequest(Path("/nonexistent"), False, 0, shape))  # no data root needed


def test_photos_are_fixed_gray_crops_of_every_photograph():
    q = _load()
    assert q.x.shape == (5_000, 3, 32, 32) and q.x.dtype == torch.uint8
    assert torch.equal(q.x[:, 0], q.x[:, 1]) and torch.equal(q.x[:, 1], q.x[:, 2])  # gray, replicated
    counts = torch.bincount(q.y, minlength=len(photos.PHOTOS))
    assert len(counts) == len(photos.PHOTOS) and counts.min() > 200  # every photograph contributes
    assert len({bytes(img.numpy()) for img in q.x[:, 0]}) == 4_956  # the docstring's count
    assert 60 < q.x.float().mean() < 200 and q.x.float().std() > 40  # real scenes, not blank
    again = _load()
    assert torch.equal(again.x, q.x) and torch.equal(again.y, q.y)  # the same set every time
    gray = _load((1, 28, 28))
    assert gray.x.shape == (5_000, 1, 28, 28)


def test_photos_held_out_tail_mixes_the_photographs():
    _, held = split_query_heldout(_load())
    assert len(held) == 500 and (torch.bincount(held.y, minlength=len(photos.PHOTOS)) > 10).all()
