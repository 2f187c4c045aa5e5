import pytest
import torch
from helpers import tiny_victim

from benchmark.metrics import align_exits, compare, exit_accuracy


def test_align_exits_identity_and_positions():
    e = torch.arange(4)
    assert torch.equal(align_exits(e, 4, 4), e)
    assert align_exits(torch.tensor([0]), 1, 4).tolist() == [3]  # single exit = victim's last
    assert align_exits(torch.arange(8), 8, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert align_exits(torch.arange(2), 2, 4).tolist() == [1, 3]
    assert align_exits(torch.arange(3), 3, 4).tolist() == [0, 2, 3]


def test_exit_accuracy_with_commonest_baseline():
    true = torch.tensor([0, 0, 0, 1, 3])
    r = exit_accuracy(true, torch.tensor([0, 0, 1, 1, 3]), 4, 4)
    assert r["exit_accuracy"] == 0.8 and r["exit_accuracy_baseline"] == 0.6
    # a one-exit guess is read as "everything at the last exit"
    assert exit_accuracy(true, torch.zeros(5, dtype=torch.long), 4, 1)["exit_accuracy"] == 0.2


def test_compare_against_itself_is_perfect():
    from benchmark.data import Split

    victim = tiny_victim()
    data = Split((torch.rand(40, 3, 32, 32) * 255).to(torch.uint8), torch.randint(0, 10, (40,)))
    s = compare(victim, victim, data, "cpu")
    assert s["clo"] == 1.0 and s["fidelity"] == 1.0 and s["cc_ratio"] == 1.0 and s["acc"] == s["victim_acc"]
    assert abs(sum(s["victim_exit_hist"]) - 1) < 1e-9


# ---- closeness: the paper's clo, trivial reference, lift, balanced clo, confusion -------------

def constant_exit_model(k: int, seed: int = 0):
    """A sdn-tiny substitute whose thresholds make every sample leave at exit ``k``."""
    net = tiny_victim(seed)
    net.set_thresholds(net.forced_exit_thresholds(k))
    return net


def random_split(n: int, seed: int = 1):
    from benchmark.data import Split

    gen = torch.Generator().manual_seed(seed)
    return Split((torch.rand(n, 3, 32, 32, generator=gen) * 255).to(torch.uint8), torch.randint(0, 10, (n,)))


def test_trivial_reference_is_the_best_constant_exit_model():
    from benchmark.closeness import closeness_scores
    from benchmark.metrics import run_early_exit
    from benchmark.training import exit_confidences

    victim, test, query = tiny_victim(), random_split(200, 1), random_split(120, 2)
    conf, _ = exit_confidences(victim, test, "cpu")  # thresholds at confidence quantiles: a mixed victim
    victim.set_thresholds([float(conf[:, 0].quantile(0.5)), float(conf[:, 1].quantile(0.6)),
                           float(conf[:, 2].quantile(0.5)), 0.0])
    hist = torch.bincount(run_early_exit(victim, test, "cpu").exits, minlength=4)
    assert (hist > 0).sum() >= 3  # the victim really mixes exits, so the reference is not 1
    scores = [closeness_scores(victim, constant_exit_model(k), test, query, "cpu") for k in range(4)]
    for k, s in enumerate(scores):
        assert s["clo"] == pytest.approx(float(hist[k]) / 200)  # constant exit k scores exit k's share
        assert s["clo_balanced"] == pytest.approx(1 / int((hist > 0).sum()))
        assert s["exit_confusion"][k] == [0] * k + [int(hist[k])] + [0] * (3 - k) or hist[k] == 0
    best = max(s["clo"] for s in scores)
    assert all(s["clo_trivial"] == pytest.approx(best) for s in scores)
    assert max(s["clo_lift"] for s in scores) == pytest.approx(0.0)
    best_q = max(s["clo_query"] for s in scores)
    assert all(s["clo_query_trivial"] == pytest.approx(best_q) for s in scores)
    assert scores[0]["query_heldout_samples"] == 120
    # the victim against itself: everything agrees, lift = 1 - trivial
    own = closeness_scores(victim, victim, test, None, "cpu")
    assert own["clo"] == 1.0 and own["clo_balanced"] == 1.0 and own["clo_query"] is None
    assert own["clo_lift"] == pytest.approx(1 - own["clo_trivial"])
    assert sum(map(sum, own["exit_confusion"])) == 200


def test_one_exit_substitute_gets_no_last_exit_credit():
    from benchmark.closeness import closeness_from_exits

    v = torch.tensor([0, 0, 1, 3, 3])
    one = closeness_from_exits(v, torch.zeros(5, dtype=torch.long), 4, 1)
    assert one["clo"] == 0.0 and one["trivial"] == 0.4 and one["lift"] == pytest.approx(-0.4)
    assert one["confusion"] == [[2], [1], [0], [2]]
    two = closeness_from_exits(v, torch.tensor([0, 0, 0, 1, 1]), 4, 2)  # 2 exits sit at the victim's 1 and 3
    assert two["clo"] == pytest.approx(0.6) and two["balanced"] == pytest.approx((0 + 1 + 1) / 3)


def test_query_heldout_split_is_the_tail():
    from benchmark.closeness import split_query_heldout

    q = random_split(50)
    attack, held = split_query_heldout(q)
    assert len(attack) == 45 and len(held) == 5 and torch.equal(held.x, q.x[45:])
    big = random_split(20_000 // 100)
    assert len(split_query_heldout(big, max_rows=7)[1]) == 7
