"""indist_augment against adaptive misinformation: queries made from a few in-distribution images
pass the defense's OOD gate about as often as honest traffic, and far more often than texture
queries; measured on the defense's own OOD score (the victim's max softmax probability)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import briefly_trained_oracle

from benchmark.api.attack import AttackContext
from benchmark.data import QUERY_SETS, DataRequest
from benchmark.datasets.synthetic import make_task_split
from benchmark.errors import ConfigError
from benchmark.oracle import Response
from benchmark.plugins import ATTACKS, DEFENSES, VICTIMS

N = 1000


@pytest.fixture(scope="module")
def confident_oracle():
    """The tiny victim trained a little longer than ``briefly_trained_oracle`` (16 more epochs on the
    owner's 256 images) and answering from its last exit, so that its max softmax probability
    separates task images from textures as a deployed victim's does."""
    oracle = briefly_trained_oracle()
    model, task = oracle.owner.model, oracle.owner.task
    torch.manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(16):
        for start in range(0, len(task.train), 64):
            rows = torch.arange(start, min(start + 64, len(task.train)))
            outs = model(task.train.images(rows))
            loss = sum(torch.nn.functional.cross_entropy(lg, task.train.y[rows]) for lg in outs)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.set_thresholds([1.0, 1.0, 1.0, 0.0])
    return oracle


def test_queries_are_the_seeds_then_augmented_copies():
    seeds = make_task_split(300, torch.Generator().manual_seed(5))
    attack = ATTACKS["indist_augment"](seeds=40)
    data, rows = attack.queries(seeds, 500, torch.Generator().manual_seed(0))
    assert data.x.dtype == torch.uint8 and len(data) == 500 and len(rows) == 40 and len(rows.unique()) == 40
    assert torch.equal(data.x[:40], seeds.x[rows])  # the seeds themselves first
    copies = data.images(torch.arange(40, 500)).double()
    own = seeds.images(rows).double()
    nearest = torch.cdist(copies.flatten(1), own.flatten(1)).min(1).values
    others = torch.cdist(copies.flatten(1), seeds.images().double().flatten(1)).topk(41, largest=False).values[:, -1]
    assert (nearest > 0).all() and (nearest < others).float().mean() > 0.9  # new images, each near a seed
    again, _ = attack.queries(seeds, 500, torch.Generator().manual_seed(0))
    assert torch.equal(again.x, data.x)
    short, few = attack.queries(seeds, 30, torch.Generator().manual_seed(0))
    assert len(short) == len(few) == 30
    with pytest.raises(ConfigError):
        ATTACKS["indist_augment"](blend=0.9)


def test_indist_queries_pass_the_misinformation_gate(confident_oracle):
    oracle, tau = confident_oracle, 0.7
    defense = DEFENSES["adaptive_misinformation"](tau=tau)
    task = oracle.owner.task
    textures = QUERY_SETS["synthetic-ood"](DataRequest(Path("unused"))).images(torch.arange(N))
    seeds = make_task_split(400, torch.Generator().manual_seed(5))
    augmented = ATTACKS["indist_augment"](seeds=50).queries(seeds, N, torch.Generator().manual_seed(0))[0].images()

    def gated(x):
        return float((defense.alpha(oracle.query(x).probs) > 0.5).double().mean())

    share = {"textures": gated(textures), "augmented": gated(augmented), "honest": gated(task.test.images())}
    print(share)
    # measured: textures 0.34, augmented copies 0.22, the owner's 256 test images 0.18
    assert share["augmented"] < share["textures"] - 0.08
    assert share["augmented"] < share["honest"] + 0.1  # about as in distribution as the owner's own images
    # what the attacker gets: the defended answers carry the victim's label more often
    served = defense.wrap(oracle, seed=0)
    agree = {k: float((served.query(x).probs.argmax(1) == oracle.query(x).probs.argmax(1)).double().mean())
             for k, x in (("textures", textures), ("augmented", augmented))}
    assert agree["augmented"] > agree["textures"] + 0.05


def test_indist_augment_runs_and_reports_its_seeds(confident_oracle):
    served = DEFENSES["adaptive_misinformation"]().wrap(confident_oracle, seed=0)

    class Box:
        budget, num_classes, input_shape = served.budget, served.num_classes, served.input_shape
        remaining = property(lambda self: served.remaining)
        used = property(lambda self: served.used)

        def query(self, x):
            r = served.query(x, account="thief")
            return Response(r.probs.clone(), r.latency.clone())

    ctx = AttackContext(seed=0, substitute=VICTIMS["sdn-tiny"](), progress=False)
    seeds = make_task_split(300, torch.Generator().manual_seed(5))
    stolen = ATTACKS["indist_augment"](seeds=50, epochs=1, batch_size=64).run(Box(), seeds, 400, ctx)
    d = stolen.details
    assert (d["queries"], d["seed_images"], d["augmented"]) == (400, 50, 350)
