import torch

from benchmark.api.victim import NEVER, place_exits
from benchmark.plugins import VICTIMS
from victims._training import choose_thresholds


def _net(exits=4, seed=0):
    torch.manual_seed(seed)
    net = VICTIMS["sdn-tiny"]().build(10, (3, 32, 32), exits=exits).eval()
    return net


def test_forward_returns_every_exit():
    net = _net()
    outs = net(torch.rand(3, 3, 32, 32))
    assert len(outs) == net.num_exits == 4
    assert all(o.shape == (3, 10) for o in outs)


def test_early_exit_matches_full_forward_decisions():
    net = _net()
    x = torch.rand(64, 3, 32, 32)
    with torch.no_grad():
        outs = net(x)
    conf = torch.stack([torch.softmax(o, 1).amax(1) for o in outs], 1)
    # thresholds at per-exit medians so samples really spread over the exits
    t = conf.median(0).values
    t[-1] = 0.0
    net.set_thresholds(t)
    hit = conf >= t[None]
    hit[:, -1] = True
    expected_exit = hit.float().argmax(1)
    out = net.early_exit(x)
    assert torch.equal(out.exits, expected_exit)
    assert len(set(out.exits.tolist())) >= 3
    full = torch.stack(outs, 1)[torch.arange(64), expected_exit]
    torch.testing.assert_close(out.logits, full, rtol=1e-4, atol=1e-5)


def test_early_exit_really_stops_computing():
    net = _net()
    calls = []
    for k, stage in enumerate(net.stages):
        stage.register_forward_hook(lambda m, i, o, k=k: calls.append((k, i[0].shape[0])))
    net.set_thresholds(net.forced_exit_thresholds(1))
    net.early_exit(torch.rand(8, 3, 32, 32))
    assert calls == [(0, 8), (1, 8)]  # stages 2 and 3 never ran


def test_exit_flops_cumulative_and_measured():
    net = _net()
    flops = net.exit_flops()
    assert flops == sorted(flops) and len(set(flops)) == 4
    assert 5e6 < flops[-1] < 5e7  # sdn-tiny is ~11 MFLOPs
    # forcing everything out at exit 0 costs exactly exit 0's FLOPs
    assert flops[0] < flops[-1] / 3


def test_place_exits_near_fractions():
    flops = [10] * 100
    assert place_exits(flops, [0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0]) == [14, 29, 44, 59, 74, 89, 99]
    assert place_exits([5, 5], [0.5, 1.0]) == [0, 1]


def test_owner_threshold_rule():
    # exit 0 is right only when confident; the rule must pick a threshold that keeps accuracy
    conf = torch.tensor([[0.99, 0.9], [0.95, 0.9], [0.6, 0.9], [0.55, 0.9]])
    correct = torch.tensor([[True, True], [True, True], [False, True], [False, True]])
    t = choose_thresholds(conf, correct)
    assert t[0] == 0.95 and t[1] == 0.0
    never = choose_thresholds(conf, torch.tensor([[False, True]] * 4))
    assert never[0] == NEVER
