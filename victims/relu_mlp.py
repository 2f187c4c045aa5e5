"""relu-mlp: fully connected ReLU networks for exact (cryptanalytic) extraction.

``layers="10-5-5-1"`` means 10 inputs, two hidden ReLU layers of 5 neurons and one linear output,
the notation of Carlini et al. (CRYPTO 2020) and Foerster et al. (NeurIPS 2024). Everything is
float64: the cryptanalytic attack works at the precision of the arithmetic.

Two ways to get weights (``init``):

- ``random``: Gaussian weights as in Carlini et al.'s ``train_models.py`` (``w ~ N(0, 1/n_out)``)
  with biases ``~ N(0, bias_std^2)`` (their models start from zero biases and are then fitted
  briefly to 20 random points, which leaves small biases; we draw them directly). Deterministic
  from ``seed``.
- ``trained``: PyTorch's default initialisation from ``seed``, then Adam on a task the suite loads
  (``--dataset``, the embedded ``synthetic`` task by default), images flattened. The input size
  decides the image shape: ``3*s*s`` inputs are RGB ``s x s`` images (3072 = 3x32x32), ``s*s``
  inputs are grayscale ``s x s`` (784 = 28x28; colour images are averaged over channels). With as
  many outputs as classes the net is a classifier (cross-entropy); with one output it is a binary
  classifier of ``label % 2`` (for ``synthetic``: the grating frequency), logistic loss.

The oracle (``MLPOracle``) answers raw outputs in float64 (no softmax) and zero latency, and
counts every query through ``Oracle.query``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from benchmark.errors import ConfigError
from benchmark.oracle import Oracle, Response
from benchmark.plugins import VICTIMS

MAX_WIDTH = 100_000
MAX_PARAMETERS = 50_000_000


def parse_layers(text: str, owner: str = "victim 'relu-mlp'") -> tuple[int, ...]:
    """``"10-5-5-1"`` -> ``(10, 5, 5, 1)``; a one-line ConfigError for anything else."""
    parts = _expand(str(text)).split("-")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{owner}: layers must look like 10-5-5-1 (input-hidden...-output), got {text!r}") from None
    if len(sizes) < 3:
        raise ConfigError(f"{owner}: layers needs an input size, at least one hidden layer and an output size, "
                          f"got {text!r}")
    if any(s < 1 for s in sizes):
        raise ConfigError(f"{owner}: every layer size must be a positive integer, got {text!r}")
    if max(sizes) > MAX_WIDTH:
        raise ConfigError(f"{owner}: layer sizes above {MAX_WIDTH} are not supported, got {text!r}")
    params = sum(a * b + b for a, b in itertools.pairwise(sizes))
    if params > MAX_PARAMETERS:
        raise ConfigError(f"{owner}: {params} parameters is more than the {MAX_PARAMETERS} supported")
    return sizes


def _expand(text: str) -> str:
    """Accept the papers' ``784-32x2-1`` shorthand (two hidden layers of 32)."""
    out = []
    for part in text.strip().split("-"):
        if "x" in part:
            width, _, times = part.partition("x")
            try:
                out.extend([width] * int(times))
            except ValueError:
                out.append(part)
        else:
            out.append(part)
    return "-".join(out)


class ReLUMLP(nn.Module):
    """``x -> A_L relu(... relu(A_1 x + b_1) ...) + b_L`` in float64; raw outputs (no softmax)."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.sizes = tuple(sizes)
        self.linears = nn.ModuleList(nn.Linear(a, b, dtype=torch.float64) for a, b in itertools.pairwise(sizes))

    @property
    def input_dim(self) -> int:
        return self.sizes[0]

    @property
    def output_dim(self) -> int:
        return self.sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        h = x.flatten(1).to(torch.float64)
        last = len(self.linears) - 1
        for i, lin in enumerate(self.linears):
            h = lin(h)
            if i < last:
                h = torch.relu(h)
        return h

    def parameters_numpy(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(weights, biases) as float64 numpy arrays: server-side only (scoring), never for attacks."""
        ws = [lin.weight.detach().cpu().numpy().astype(np.float64).copy() for lin in self.linears]
        bs = [lin.bias.detach().cpu().numpy().astype(np.float64).copy() for lin in self.linears]
        return ws, bs

    @torch.no_grad()
    def set_parameters(self, weights: list[np.ndarray], biases: list[np.ndarray]) -> None:
        for lin, w, b in zip(self.linears, weights, biases):
            lin.weight.copy_(torch.as_tensor(np.asarray(w), dtype=torch.float64))
            lin.bias.copy_(torch.as_tensor(np.asarray(b), dtype=torch.float64))


class MLPOracle(Oracle):
    """Serves a ReLUMLP: ``Response.probs`` holds the raw float64 outputs (B, out), latency zeros.

    The forward pass runs on a float64 numpy copy of the weights taken at construction: the
    attack sends many tiny batches, for which numpy is ~100x faster than torch's multi-threaded
    kernels on a shared CPU (the function served is the same network, evaluated in float64)."""

    def __init__(self, net: ReLUMLP, budget: int, batch_size: int = 65_536) -> None:
        super().__init__(budget, net.output_dim, (net.input_dim,))
        self._weights, self._biases = net.eval().parameters_numpy()
        self._batch = batch_size

    def _forward(self, x: np.ndarray) -> np.ndarray:
        h = x
        last = len(self._weights) - 1
        for i, (w, b) in enumerate(zip(self._weights, self._biases)):
            h = h @ w.T + b
            if i < last:
                np.maximum(h, 0.0, out=h)
        return h

    def _answer(self, x: Tensor) -> Response:
        xs = x.detach().cpu().reshape(len(x), -1).numpy().astype(np.float64, copy=False)
        outs = [self._forward(xs[s:s + self._batch]) for s in range(0, len(xs), self._batch)]
        out = np.concatenate(outs) if outs else np.zeros((0, len(self._biases[-1])))
        return Response(torch.from_numpy(out), torch.zeros(len(x), dtype=torch.float64))


@dataclass(frozen=True)
class MLPVictim:
    """A built victim: the network plus what the scorer may use (the task's test split, if any)."""

    net: ReLUMLP
    sizes: tuple[int, ...]
    test_x: Tensor | None = None  # (N, n0) float64 real inputs, flattened
    test_y: Tensor | None = None
    dataset: str | None = None

    def oracle(self, budget: int) -> MLPOracle:
        """The server for this victim: raw float64 outputs, every query counted against ``budget``."""
        return MLPOracle(self.net, budget)
    train_seconds: float = 0.0
    cached: bool = False
    test_accuracy: float | None = None


@VICTIMS.register("relu-mlp")
@dataclass(frozen=True)
class ReLUMLPSpec:
    """Fully connected ReLU network given by its layer sizes, random or trained (see module doc)."""

    name: ClassVar[str] = "relu-mlp"
    kind: ClassVar[str] = "relu-mlp"

    layers: str = "10-5-5-1"
    init: Literal["random", "trained"] = "random"
    seed: int | None = None  # weights / training seed; None: the run's --seed
    bias_std: float = 0.1
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 128

    def __post_init__(self) -> None:
        parse_layers(self.layers)
        if self.init not in ("random", "trained"):
            raise ConfigError(f"victim 'relu-mlp': init must be random or trained, got {self.init!r}")
        if self.seed is not None and self.seed < 0:
            raise ConfigError("victim 'relu-mlp': seed must be non-negative")
        if self.bias_std < 0 or not math.isfinite(self.bias_std):
            raise ConfigError("victim 'relu-mlp': bias_std must be a non-negative number")
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1:
            raise ConfigError("victim 'relu-mlp': epochs, lr and batch_size must be positive")
        if self.init == "trained":
            image_shape(self.sizes[0])

    @property
    def sizes(self) -> tuple[int, ...]:
        return parse_layers(self.layers)

    def weight_seed(self, run_seed: int) -> int:
        return run_seed if self.seed is None else self.seed

    def build_random(self, seed: int) -> ReLUMLP:
        """Gaussian weights N(0, 1/n_out) (Carlini et al.'s generator), biases N(0, bias_std^2)."""
        sizes = self.sizes
        rng = np.random.default_rng(seed)
        net = ReLUMLP(sizes)
        ws = [rng.normal(size=(b, a)) / math.sqrt(b) for a, b in itertools.pairwise(sizes)]
        bs = [rng.normal(size=b) * self.bias_std for b in sizes[1:]]
        net.set_parameters(ws, bs)
        return net.eval()

    def build(self, run_seed: int = 0, dataset: str = "synthetic", data_root=None, download: bool = False,
              data_seed: int = 0, progress: bool = False) -> MLPVictim:
        seed = self.weight_seed(run_seed)
        if self.init == "random":
            return MLPVictim(self.build_random(seed), self.sizes)
        return self._trained(seed, dataset, data_root, download, data_seed, progress)

    # ---- trained victims -------------------------------------------------------------------

    def _trained(self, seed: int, dataset: str, data_root, download: bool, data_seed: int,
                 progress: bool) -> MLPVictim:
        from pathlib import Path

        from benchmark.data import TASKS, DataRequest
        from benchmark.paths import cache_dir, data_dir
        from benchmark.zoo import load_or_fit

        sizes = self.sizes
        channels, side = image_shape(sizes[0])
        req = DataRequest(Path(data_root) if data_root else data_dir(), download, data_seed, (3, side, side))
        task = TASKS[dataset](req)
        if sizes[-1] not in (1, task.num_classes):
            raise ConfigError(f"victim 'relu-mlp': a net trained on {dataset} needs 1 output (binary: label % 2) or "
                              f"{task.num_classes} outputs (one per class), got {sizes[-1]}")
        xtr, ytr = flatten_images(task.train.images(), channels, side), task.train.y
        xte, yte = flatten_images(task.test.images(), channels, side), task.test.y
        key = json.dumps({"layers": list(sizes), "dataset": dataset, "data_seed": data_seed, "seed": seed,
                          "epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size, "format": 1},
                         sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        path = cache_dir() / "victims" / f"relu-mlp-{dataset}-s{seed}-{digest}.pt"
        net, cached, seconds = load_or_fit(
            path, lambda: ReLUMLP(sizes),
            lambda m: train_mlp(m, xtr, ytr, seed, self.epochs, self.lr, self.batch_size, progress),
            {"victim": "relu-mlp", "layers": list(sizes), "dataset": dataset, "seed": seed}, self.name)
        net.eval()
        acc = label_accuracy(net, xte, yte)
        return MLPVictim(net, sizes, xte, yte, dataset, seconds, cached, acc)


def image_shape(n_inputs: int) -> tuple[int, int]:
    """(channels, side) of the images a net with ``n_inputs`` inputs is trained on."""
    side3 = math.isqrt(n_inputs // 3) if n_inputs % 3 == 0 else 0
    if side3 and 3 * side3 * side3 == n_inputs:
        return 3, side3
    side1 = math.isqrt(n_inputs)
    if side1 * side1 == n_inputs:
        return 1, side1
    raise ConfigError(f"victim 'relu-mlp': a trained net needs 3*s*s (RGB) or s*s (grayscale) inputs, "
                      f"got {n_inputs}")


def flatten_images(x: Tensor, channels: int, side: int) -> Tensor:
    """Float images (N, C, H, W) in [0, 1] -> (N, channels*side*side) float64."""
    if x.shape[-1] != side or x.shape[-2] != side:
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1)
    return x.reshape(len(x), -1).to(torch.float64)


def binary_or_class(net_out: int, y: Tensor) -> Tensor:
    return (y % 2) if net_out == 1 else y


@torch.no_grad()
def label_accuracy(net: ReLUMLP, x: Tensor, y: Tensor) -> float:
    out = net(x)
    pred = (out[:, 0] > 0).long() if out.shape[1] == 1 else out.argmax(1)
    return float((pred == binary_or_class(out.shape[1], y)).double().mean())


def train_mlp(net: ReLUMLP, x: Tensor, y: Tensor, seed: int, epochs: int, lr: float, batch_size: int,
              progress: bool = False) -> None:
    """Adam on cross-entropy (one output per class) or logistic loss (one output, ``label % 2``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls: one thread is much faster than two contending ones
    try:
        _train(net, x, y, seed, epochs, lr, batch_size, progress)
    finally:
        torch.set_num_threads(threads)


def _train(net: ReLUMLP, x: Tensor, y: Tensor, seed: int, epochs: int, lr: float, batch_size: int,
           progress: bool) -> None:
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    for lin in net.linears:  # PyTorch's default init, seeded
        lin.reset_parameters()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    target = binary_or_class(net.output_dim, y)
    net.train()
    for _ in tqdm(range(epochs), desc="train relu-mlp", disable=not progress, leave=False):
        perm = torch.randperm(len(x), generator=gen)
        for s in range(0, len(x), batch_size):
            idx = perm[s:s + batch_size]
            out = net(x[idx])
            if net.output_dim == 1:
                loss = nn.functional.binary_cross_entropy_with_logits(out[:, 0], target[idx].double())
            else:
                loss = nn.functional.cross_entropy(out, target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
