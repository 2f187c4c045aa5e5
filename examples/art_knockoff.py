"""KnockoffNets from IBM's Adversarial Robustness Toolbox (ART), run against a StealBench service.

The attack is ART's own (``art.attacks.extraction.KnockoffNets``, random sampling); StealBench
only serves the defended victim (``python -m benchmark serve``) and scores what comes back:

- the victim is an ART ``BlackBoxClassifier`` whose predict function POSTs each batch to
  ``/query`` (``.npy`` bytes) and returns the probabilities the service answers;
- the thief is an ART ``PyTorchClassifier`` around the substitute network that ``/info`` names,
  trained through its last exit;
- the attacker's own images are colour crops of photographs bundled with scikit-image;
- the trained substitute's tensors go to ``/submit``; the scores are printed as JSON.

    python -m benchmark serve --victim sdn-tiny --defense none --budget 1000 --port 8000 &
    python examples/art_knockoff.py --url http://127.0.0.1:8000

Needs ``adversarial-robustness-toolbox`` (in StealBench's ``dev`` extra) and, for the
substitute's network, StealBench's victim families (``benchmark.plugins.VICTIMS``).
"""

from __future__ import annotations

import argparse
import io
import json
import sys

import numpy as np
import requests
import torch
from art.attacks.extraction import KnockoffNets
from art.estimators.classification import BlackBoxClassifier, PyTorchClassifier

from benchmark.plugins import VICTIMS

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat")


class Service:
    """The HTTP service: ``/info``, ``/query`` as a numpy function, ``/submit``."""

    def __init__(self, url: str, timeout: float = 600) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def info(self) -> dict:
        r = requests.get(f"{self.url}/info", timeout=self.timeout)
        r.raise_for_status()
        return r.json()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (B, classes) for a float32 batch (B, C, H, W) in [0, 1]."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(x, dtype=np.float32))
        r = requests.post(f"{self.url}/query", data=buf.getvalue(), timeout=self.timeout,
                          headers={"Content-Type": "application/x-npy"})
        if r.status_code != 200:
            raise RuntimeError(f"/query answered {r.status_code}: {r.json().get('error', r.text)}")
        return np.asarray(r.json()["probs"], dtype=np.float32)

    def submit(self, model: torch.nn.Module, name: str, details: dict) -> dict:
        buf = io.BytesIO()
        torch.save({"state_dict": model.state_dict(), "exits": None, "attack": name, "details": details}, buf)
        r = requests.post(f"{self.url}/submit", data=buf.getvalue(), timeout=self.timeout)
        if r.status_code != 200:
            raise RuntimeError(f"/submit answered {r.status_code}: {r.json().get('error', r.text)}")
        return r.json()


class LastExit(torch.nn.Module):
    """A multi-exit network seen as a plain classifier: the logits of its last exit."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]


def photo_crops(n: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """``n`` random square crops of scikit-image's bundled colour photographs, resized to ``shape``
    (C, H, W), float32 in [0, 1] (gray when C is 1)."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [getattr(skimage.data, name)()[..., :3] for name in PHOTOS]
    out = np.empty((n, *shape), dtype=np.float32)
    for i in range(n):
        img = photos[rng.integers(len(photos))]
        side = int(rng.integers(32, min(img.shape[:2]) // 2 + 1))
        top, left = (int(rng.integers(0, img.shape[d] - side + 1)) for d in (0, 1))
        crop = torch.from_numpy(img[top:top + side, left:left + side].astype(np.float32) / 255).permute(2, 0, 1)
        crop = torch.nn.functional.interpolate(crop[None], size=shape[1:], mode="bilinear", antialias=True)[0]
        out[i] = crop.mean(0, keepdim=True).numpy() if shape[0] == 1 else crop[:shape[0]].clamp(0, 1).numpy()
    return out


def substitute_network(info: dict) -> torch.nn.Module:
    """The network ``/info`` says the substitute must be: its family's spec, built for the task."""
    sub = info["substitute"]
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in sub["options"].items()}
    return VICTIMS[sub["name"]](**options).build(info["num_classes"], tuple(info["input_shape"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    p.add_argument("--queries", type=int, help="images to ask the victim about (default: the budget left)")
    p.add_argument("--pool", type=int, help="the attacker's own images to sample them from (default: 2x queries)")
    p.add_argument("--epochs", type=int, default=10, help="thief training epochs")
    p.add_argument("--batch", type=int, default=64, help="images per /query and per training step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--probabilities", action="store_true",
                   help="train on the victim's probabilities (default: its top-1 labels, as KnockoffNets does)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="art-knockoff", help="what the submission calls itself")
    args = p.parse_args(argv)

    service = Service(args.url)
    info = service.info()
    left = info["budget"] - info["used"]
    n = left if args.queries is None else args.queries
    if not 0 < n <= left:
        print(f"art_knockoff: --queries must be from 1 to the {left} queries left, got {n}", file=sys.stderr)
        return 2
    shape, classes = tuple(info["input_shape"]), info["num_classes"]
    np.random.seed(args.seed)  # ART draws its samples from numpy's global generator
    torch.manual_seed(args.seed)

    victim = BlackBoxClassifier(service.predict, shape, classes, clip_values=(0.0, 1.0))
    net = substitute_network(info)
    thief = PyTorchClassifier(LastExit(net), loss=torch.nn.CrossEntropyLoss(),
                              optimizer=torch.optim.Adam(net.parameters(), lr=args.lr), input_shape=shape,
                              nb_classes=classes, clip_values=(0.0, 1.0), device_type="cpu")
    attack = KnockoffNets(victim, batch_size_fit=args.batch, batch_size_query=args.batch, nb_epochs=args.epochs,
                          nb_stolen=n, sampling_strategy="random", use_probability=args.probabilities,
                          verbose=False)
    pool = photo_crops(args.pool or 2 * n, shape, args.seed)
    attack.extract(pool, thieved_classifier=thief)

    answer = service.submit(net.eval(), args.name, {"library": "adversarial-robustness-toolbox",
                                                     "method": "KnockoffNets", "queries": n, "pool": len(pool),
                                                     "epochs": args.epochs, "probabilities": args.probabilities})
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
