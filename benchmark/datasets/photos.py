"""Query set ``photos``: crops of the real photographs that ship with scikit-image.

Natural images for attacks whose victim task has no natural images of its own nearby (the
multi-exit paper queries with TinyImageNet, a download): 5,000 square crops, each from one of the
photographs in ``skimage.data`` (:data:`PHOTOS`), at a seeded random position and a side of 24 to
160 pixels, converted to gray (luminance), resized to the victim's input and replicated to its
channels. Gray because the tasks it is meant for (Fashion-MNIST, MNIST) are gray; a crop is a
view of a real scene (a face, a cat, a rocket, coins, a clock, coffee, grass, a moon, text), not
of the task. The crops are fixed (seed :data:`CROP_SEED`): the same set on every machine.

Distinct images: 5,000 crops of 17 photographs, 4,956 of them distinct at 32x32 (flat regions such
as sky repeat); neighbouring crops overlap, so the set holds less variety than its size suggests.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from benchmark.data import QUERY_SETS, DataRequest, Split
from benchmark.datasets.vision import to_shape
from benchmark.errors import StealBenchError

#: the photographs of ``skimage.data`` used (all bundled with the package; no download)
PHOTOS = ("astronaut", "camera", "cat", "coffee", "rocket", "horse", "clock", "coins", "moon", "page", "text",
          "grass", "gravel", "brick", "hubble_deep_field", "immunohistochemistry", "chelsea")
SIZE = 5_000
CROP_SEED = 0
CROP_SIDES = (24, 160)
BASE = 64  # crops are resized to BASE x BASE once, then to the victim's input


def _gray(image: np.ndarray) -> np.ndarray:
    """uint8 luminance (ITU-R 601) of an RGB(A) or gray image."""
    if image.ndim == 3:
        image = image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.clip(np.asarray(image, dtype=np.float64), 0, 255).round().astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _crops() -> tuple[np.ndarray, np.ndarray]:
    """(SIZE, BASE, BASE) uint8 crops and the index of the photograph each came from."""
    try:
        import skimage.data
    except ImportError as exc:
        raise StealBenchError("--query-data photos needs the package scikit-image (a dependency of StealBench; "
                              "pip install scikit-image)") from exc
    photos = [_gray(getattr(skimage.data, name)()) for name in PHOTOS]
    rng = np.random.default_rng(CROP_SEED)
    out = np.empty((SIZE, BASE, BASE), dtype=np.uint8)
    source = rng.integers(0, len(photos), SIZE)
    for i, k in enumerate(source):
        img = photos[k]
        side = int(rng.integers(CROP_SIDES[0], min(CROP_SIDES[1], *img.shape[:2]) + 1))
        top = int(rng.integers(0, img.shape[0] - side + 1))
        left = int(rng.integers(0, img.shape[1] - side + 1))
        crop = torch.from_numpy(img[top:top + side, left:left + side].copy())[None, None].float()
        small = torch.nn.functional.interpolate(crop, size=(BASE, BASE), mode="bilinear", antialias=True,
                                                align_corners=False)
        out[i] = small[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    return out, source


@QUERY_SETS.register("photos")
def load_photos(req: DataRequest) -> Split:
    """5,000 gray crops of scikit-image's bundled photographs (module docstring); ``y`` is the index of
    the photograph each crop came from (in :data:`PHOTOS`), which no attack is given as a label."""
    x, source = _crops()
    return Split(to_shape(torch.from_numpy(x.copy()).unsqueeze(1), req.input_shape),
                 torch.from_numpy(source.astype(np.int64)))
