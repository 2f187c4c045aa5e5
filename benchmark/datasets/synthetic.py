"""The embedded default data (no download): a procedurally generated 10-class image task with
graded difficulty, and a task-irrelevant query set of textures (``synthetic-ood``).

Each ``synthetic`` class is an oriented grating in a class colour. A per-sample difficulty
d ~ U(0, 1) lowers contrast and saturation, mixes in another class's pattern (weight 0.9 d),
jitters the orientation and adds noise: easy samples are caught by shallow exits, hard ones
travel deep, so a multi-exit victim spreads its samples over its exits as on real data.
``synthetic-ood`` plays the role TinyImageNet plays in the paper: natural-looking but unrelated
textures (plaids, blobs, checkerboards, smooth noise, rings, gratings, gradients), labelled by
texture family so that class-aware samplers (KnockOff adaptive) can use them. ``synthetic-world``
adds a ninth family nearer the task, gratings of random hue and orientation photographed like the
task's images; ``synthetic-indist`` is the task itself (an ablation outside the threat model).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from benchmark.data import QUERY_SETS, TASKS, DataRequest, Split, TaskData, to_uint8

NUM_CLASSES = 10
SIZES = {"train": 10_000, "val": 2_000, "test": 2_000}
OOD_SIZE = 20_000
CHUNK = 2_000


def _coords(size: int) -> tuple[Tensor, Tensor]:
    r = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    return xx, yy


def _hsv_colour(hue: Tensor, sat: Tensor) -> Tensor:
    """(n,) hue in [0,1), saturation -> (n, 3) RGB in [0, 1] at full value."""
    k = torch.stack([torch.full_like(hue, 5.0), torch.full_like(hue, 3.0), torch.full_like(hue, 1.0)], 1)
    k = (k + hue[:, None] * 6) % 6
    rgb = 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return 1 - sat[:, None] * (1 - rgb) * 0 - sat[:, None] * (1 - rgb)  # value 1, saturation sat


def _grating(theta: Tensor, freq: Tensor, phase: Tensor, size: int) -> Tensor:
    xx, yy = _coords(size)
    proj = xx[None] * torch.cos(theta)[:, None, None] + yy[None] * torch.sin(theta)[:, None, None]
    return torch.sin(math.pi * freq[:, None, None] * proj + phase[:, None, None])


def _class_pattern(c: Tensor, theta_jitter: Tensor, phase: Tensor, sat: Tensor, size: int) -> Tensor:
    theta = c.float() * math.pi / NUM_CLASSES + theta_jitter
    freq = torch.where(c % 2 == 0, torch.tensor(2.5), torch.tensor(4.0))
    colour = _hsv_colour(c.float() / NUM_CLASSES, sat)  # (n, 3)
    g = _grating(theta, freq, phase, size)  # (n, H, W) in [-1, 1]
    return (colour - 0.5)[:, :, None, None] * 2 * g[:, None]  # (n, 3, H, W), zero-mean colour


def make_task_split(n: int, gen: torch.Generator, size: int = 32) -> Split:
    xs, ys = [], []
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        y = torch.randint(0, NUM_CLASSES, (m,), generator=gen)
        d = torch.rand(m, generator=gen)
        other = (y + torch.randint(1, NUM_CLASSES, (m,), generator=gen)) % NUM_CLASSES
        contrast = 0.45 * (1 - 0.6 * d)
        sat = 1 - 0.8 * d
        jitter = torch.randn(m, generator=gen) * 0.2 * d
        main = _class_pattern(y, jitter, torch.rand(m, generator=gen) * 2 * math.pi, sat, size)
        dist = _class_pattern(other, torch.zeros(m), torch.rand(m, generator=gen) * 2 * math.pi, sat, size)
        w = (0.9 * d)[:, None, None, None]
        bg = 0.3 + 0.4 * torch.rand(m, 1, 1, 1, generator=gen)
        noise = torch.randn(m, 3, size, size, generator=gen) * (0.03 + 0.4 * d)[:, None, None, None]
        x = bg + contrast[:, None, None, None] * (main + w * dist) / (1 + w) + noise
        xs.append(to_uint8(x))
        ys.append(y)
    return Split(torch.cat(xs), torch.cat(ys))


@TASKS.register("synthetic")
def load_synthetic(req: DataRequest) -> TaskData:
    """The embedded default task; deterministic from ``req.seed``; ~1 s to generate."""
    size = req.input_shape[-1]
    splits = {}
    for i, (name, n) in enumerate(SIZES.items()):
        gen = torch.Generator().manual_seed(10_007 * (req.seed + 1) + i)
        splits[name] = make_task_split(n, gen, size)
    return TaskData("synthetic", splits["train"], splits["val"], splits["test"], NUM_CLASSES)


# ---- the task-irrelevant query set -------------------------------------------------------------

def _rand_colour(m: int, gen: torch.Generator) -> Tensor:
    return torch.rand(m, 3, generator=gen)


def _ood_family(fam: int, m: int, gen: torch.Generator, size: int) -> Tensor:
    xx, yy = _coords(size)
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    c1, c2 = _rand_colour(m, gen), _rand_colour(m, gen)
    if fam == 0:  # plaid: two gratings
        g1 = _grating(u(m) * math.pi, 1 + 5 * u(m), u(m) * 6.3, size)
        g2 = _grating(u(m) * math.pi, 1 + 5 * u(m), u(m) * 6.3, size)
        x = 0.5 + 0.5 * ((c1[:, :, None, None] - 0.5) * g1[:, None] + (c2[:, :, None, None] - 0.5) * g2[:, None])
    elif fam == 1:  # gaussian blobs
        x = 0.2 + 0.6 * u(m, 3, 1, 1)
        for _ in range(3):
            cx, cy, r = u(m) * 2 - 1, u(m) * 2 - 1, 0.15 + 0.5 * u(m)
            blob = torch.exp(-((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2)
                             / (2 * r[:, None, None] ** 2))
            x = x + (_rand_colour(m, gen) - 0.5)[:, :, None, None] * blob[:, None]
    elif fam == 2:  # rotated checkerboard
        t, a = u(m) * math.pi, 2 + 6 * u(m)
        xr = xx[None] * torch.cos(t)[:, None, None] - yy[None] * torch.sin(t)[:, None, None]
        yr = xx[None] * torch.sin(t)[:, None, None] + yy[None] * torch.cos(t)[:, None, None]
        chk = (torch.sin(a[:, None, None] * xr) * torch.sin(a[:, None, None] * yr) > 0).float()[:, None]
        x = chk * c1[:, :, None, None] + (1 - chk) * c2[:, :, None, None]
    elif fam == 3:  # smooth noise
        low = int(2 + 6 * float(u(1)))
        base = u(m, 3, low, low)
        x = torch.nn.functional.interpolate(base, size=(size, size), mode="bicubic", align_corners=False)
    elif fam == 4:  # rings
        cx, cy = u(m) * 2 - 1, u(m) * 2 - 1
        r = torch.sqrt((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2)
        g = torch.sin(math.pi * (1 + 5 * u(m))[:, None, None] * r)
        x = 0.5 + 0.45 * (c1[:, :, None, None] - 0.5) * 2 * g[:, None]
    elif fam == 5:  # one grating, any orientation, frequency and colour
        g = _grating(u(m) * math.pi, 1 + 5 * u(m), u(m) * 6.3, size)
        x = (0.3 + 0.4 * u(m, 1, 1, 1)) + 0.5 * u(m, 1, 1, 1) * (c1[:, :, None, None] - 0.5) * 2 * g[:, None]
    elif fam == 6:  # linear colour gradient
        t = u(m) * 2 * math.pi
        ramp = (xx[None] * torch.cos(t)[:, None, None] + yy[None] * torch.sin(t)[:, None, None] + 1) / 2
        x = ramp[:, None] * c1[:, :, None, None] + (1 - ramp[:, None]) * c2[:, :, None, None]
    else:  # grating under heavy noise
        g = _grating(u(m) * math.pi, 1 + 5 * u(m), u(m) * 6.3, size)
        x = 0.5 + 0.3 * (c1[:, :, None, None] - 0.5) * 2 * g[:, None] + 0.2 * torch.randn(m, 3, size, size,
                                                                                           generator=gen)
    x = x + torch.randn(m, 3, size, size, generator=gen) * (0.1 * u(m))[:, None, None, None]
    return x


OOD_FAMILIES = 8


def _world_grating(m: int, gen: torch.Generator, size: int) -> Tensor:
    """A grating of any hue, orientation and frequency, photographed like the task's images (the
    task's background, contrast, saturation and noise, with a difficulty d ~ U(0, 1)); hue and
    orientation are drawn independently, so it rarely pairs them as a task class does."""
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    d, theta, freq = u(m), u(m) * math.pi, 1.5 + 4 * u(m)
    colour = _hsv_colour(u(m), 1 - 0.8 * d)
    g = _grating(theta, freq, u(m) * 2 * math.pi, size)
    contrast = (0.45 * (1 - 0.6 * d))[:, None, None, None]
    bg = 0.3 + 0.4 * u(m, 1, 1, 1)
    noise = torch.randn(m, 3, size, size, generator=gen) * (0.03 + 0.4 * d)[:, None, None, None]
    main = (colour - 0.5)[:, :, None, None] * 2 * g[:, None]
    return bg + contrast * main + noise


def _family_set(req: DataRequest, families: int) -> Split:
    """OOD_SIZE images, each of a uniformly drawn family (0-7: ``_ood_family``; 8: ``_world_grating``),
    labelled by family; deterministic from the seed."""
    size = req.input_shape[-1]
    gen = torch.Generator().manual_seed(99_991 * (req.seed + 1))
    xs, ys = [], []
    for start in range(0, OOD_SIZE, CHUNK):
        m = min(CHUNK, OOD_SIZE - start)
        fam = torch.randint(0, families, (m,), generator=gen)
        x = torch.empty(m, 3, size, size)
        for f in range(families):
            sel = (fam == f).nonzero().flatten()
            if len(sel):
                n = len(sel)
                x[sel] = _world_grating(n, gen, size) if f == OOD_FAMILIES else _ood_family(f, n, gen, size)
        xs.append(to_uint8(x))
        ys.append(fam)
    return Split(torch.cat(xs), torch.cat(ys))


@QUERY_SETS.register("synthetic-ood")
def load_synthetic_ood(req: DataRequest) -> Split:
    """20,000 task-irrelevant texture images in 8 labelled families; deterministic from the seed."""
    return _family_set(req, OOD_FAMILIES)


@QUERY_SETS.register("synthetic-world")
def load_synthetic_world(req: DataRequest) -> Split:
    """20,000 task-irrelevant images from the task's own visual world: the eight texture families of
    ``synthetic-ood`` plus a ninth, gratings of random hue, orientation and frequency seen through the
    task's camera (``_world_grating``; label 8). TinyImageNet stands to CIFAR-10 like this: other
    content, same kind of photographs. Deterministic from the seed."""
    return _family_set(req, OOD_FAMILIES + 1)


INDIST_SIZE = 20_000


@QUERY_SETS.register("synthetic-indist")
def load_synthetic_indist(req: DataRequest) -> Split:
    """20,000 fresh images of the ``synthetic`` task itself (its generator under another seed than
    train/val/test), labelled with their task class: an attacker who owns in-distribution data.
    Outside the paper's threat model (task-irrelevant queries); an ablation that shows how much of
    a result comes from the shift between the query set and the task."""
    gen = torch.Generator().manual_seed(10_007 * (req.seed + 1) + 97)
    return make_task_split(INDIST_SIZE, gen, req.input_shape[-1])
