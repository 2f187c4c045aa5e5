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
