"""Baseline attacks (knockoff random/adaptive, noise, esa): budget, determinism, that they learn,
the global-threshold SDN rule, bad options, and the comparison script's table."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import PROFILE, tiny_oracle

from attacks._baseline import GRID, exits_at, global_threshold, holdout, noise_images
from attacks.esa import opt_syn
from attacks.knockoff import RunningScale, certainty_reward, diversity_reward
from benchmark.api.attack import AttackContext
from benchmark.api.victim import NEVER
from benchmark.cli import main
from benchmark.data import QUERY_SETS, TASKS, DataRequest, Split
from benchmark.errors import BudgetExceeded, ConfigError
from benchmark.metrics import compare
from benchmark.options import build_plugin
from benchmark.oracle import VictimOracle
from benchmark.plugins import ATTACKS, VICTIMS
from benchmark.timing import SimulatedTiming
from benchmark.zoo import load_or_train

ROOT = Path(__file__).resolve().parents[2]
FAST = {"epochs": 1, "batch_size": 64}
#: (attack, options) for every baseline; ESA with small rounds so that tiny budgets hold several
CASES = [("knockoff", {"sampling": "random"}), ("knockoff", {"sampling": "adaptive"}), ("noise", {}),
         ("esa", {"syn_size": 100, "opt_steps": 3})]
IDS = ["knockoff-random", "knockoff-adaptive", "noise", "esa"]


@pytest.fixture(scope="module")
def query_set():
    return QUERY_SETS["synthetic-ood"](DataRequest(Path("unused")))


def ctx(seed: int = 0) -> AttackContext:
    return AttackContext(seed=seed, substitute=VICTIMS["sdn-tiny"](), progress=False)


class CountingOracle:
    """Wraps a BlackBox and records every batch it is asked for."""

    def __init__(self, box) -> None:
        self.box, self.batches = box, []

    def query(self, x):
        self.batches.append(len(x))
        return self.box.query(x)

    def __getattr__(self, name):
        return getattr(self.box, name)


# ---- budget ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, opts", CASES, ids=IDS)
def test_never_exceeds_the_budget(name, opts, query_set):
    attack = ATTACKS[name](**FAST, **opts)
    # the attack's budget is smaller than the oracle's and not a multiple of any batch or round
    oracle = tiny_oracle(budget=1000)
    spy = CountingOracle(oracle.black_box())
    stolen = attack.run(spy, query_set, 333, ctx())
    assert 0 < sum(spy.batches) == oracle.used <= 333
    if name == "esa":
        assert oracle.used == 300 and stolen.details["rounds"] == 3 and stolen.details["unused_budget"] == 33
    else:
        assert oracle.used == 333
    # the oracle has less left than the attack's budget: the attack stops at what is left
    oracle = tiny_oracle(budget=1000)
    oracle.used = 750
    attack.run(oracle.black_box(), query_set, 1000, ctx())
    assert oracle.used <= 1000
    assert stolen.model.num_exits == 4 and stolen.query_index is None


def test_budget_smaller_than_one_step_is_a_one_line_error(query_set):
    with pytest.raises(ConfigError, match=r"at least one round \(1000 queries\), got 500"):
        ATTACKS["esa"]().check_budget(500)
    with pytest.raises(ConfigError, match=r"at least one batch \(128 queries\), got 100"):
        ATTACKS["knockoff"]().check_budget(100)
    with pytest.raises(ConfigError, match="one batch"):
        ATTACKS["noise"]().check_budget(10)
    oracle = tiny_oracle(budget=1000)
    oracle.used = 950  # only 50 left: refused before any query
    with pytest.raises(ConfigError, match="50 queries left"):
        ATTACKS["esa"](syn_size=100).run(oracle.black_box(), query_set, 1000, ctx())
    assert oracle.used == 950


@pytest.mark.parametrize("argv, message", [
    (["--attack", "knockoff", "--attack-opt", "sampling=bandit"], "sampling must be random or adaptive, got 'bandit'"),
    (["--attack", "knockoff", "--attack-opt", "reward=fun"], "reward must be one of"),
    (["--attack", "esa", "--budget", "999"], "needs a budget of at least one round (1000 queries), got 999"),
    (["--attack", "esa", "--attack-opt", "syn_size=100", "--budget", "50"], "at least one round (100 queries)"),
    (["--attack", "noise", "--attack-opt", "distribution=pink"], "distribution must be one of"),
    (["--attack", "esa", "--attack-opt", "init=pink"], "init must be one of"),
    (["--attack", "esa", "--attack-opt", "syn_size=1"], "syn_size must be >= 2"),
    (["--attack", "noise", "--attack-opt", "val_fraction=1.5"], "val_fraction must be in [0, 1)"),
    (["--attack", "knockoff", "--attack-opt", "samplng=random"], "did you mean 'sampling'"),
])
def test_bad_options_one_line_error(argv, message, capsys):
    assert main(["run", *argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_adaptive_needs_class_labels():
    unlabeled = Split(torch.zeros(300, 3, 32, 32, dtype=torch.uint8), torch.zeros(300, dtype=torch.long))
    oracle = tiny_oracle(budget=300)
    with pytest.raises(ConfigError, match="needs a query set with class labels"):
        ATTACKS["knockoff"](sampling="adaptive", **FAST).run(oracle.black_box(), unlabeled, 300, ctx())
    assert oracle.used == 0


def without_times(obj):
    if isinstance(obj, dict):
        return {k: without_times(v) for k, v in obj.items() if not str(k).endswith("seconds")}
    if isinstance(obj, list):
        return [without_times(v) for v in obj]
    return obj


# ---- determinism ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, opts", CASES, ids=IDS)
def test_deterministic_under_a_seed(name, opts, query_set):
    def once(seed):
        oracle = tiny_oracle(budget=300)
        stolen = ATTACKS[name](**FAST, **opts).run(oracle.black_box(), query_set, 300, ctx(seed))
        return stolen.model.state_dict(), stolen.details

    (a, da), (b, db), (c, _) = once(0), once(0), once(1)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert without_times(da) == without_times(db)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# ---- they learn: on the default task they clearly beat an untrained substitute --------------

@pytest.fixture(scope="module")
def trained():
    req = DataRequest(Path("unused"))
    task = TASKS["synthetic"](req)
    spec = VICTIMS["sdn-tiny"](epochs=1)
    return task, load_or_train(spec, task, 0, "cpu", progress=False).model, spec


def beats_untrained(victim, spec, task, query_set, name, opts, budget):
    """Run the attack on ``victim`` and score it and an untrained substitute on the test set."""
    oracle = VictimOracle(victim, SimulatedTiming(PROFILE, 0), budget)
    context = AttackContext(seed=0, substitute=spec, progress=False)
    stolen = ATTACKS[name](**opts).run(oracle.black_box(), query_set, budget, context)
    assert oracle.used <= budget
    torch.manual_seed(0)
    untrained = spec.build(10, (3, 32, 32))
    untrained.set_thresholds([0.5, 0.5, 0.5, 0.0])
    return compare(victim, stolen.model, task.test, "cpu"), compare(victim, untrained, task.test, "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["random", "adaptive"])
def test_knockoff_beats_an_untrained_substitute(sampling, trained, query_set):
    """A 1-epoch victim, 2000 queries, 8 epochs: ~77-79% accuracy against ~11% untrained."""
    task, victim, spec = trained
    got, base = beats_untrained(victim, spec, task, query_set, "knockoff",
                                {"sampling": sampling, "epochs": 8, "batch_size": 64}, 2000)
    assert got["acc"] >= base["acc"] + 0.4 and got["fidelity"] >= base["fidelity"] + 0.4, (got, base)


@pytest.fixture(scope="module")
def default_victim():
    task = TASKS["synthetic"](DataRequest(Path("unused")))
    spec = VICTIMS["sdn-tiny"]()
    return task, load_or_train(spec, task, 0, "cpu", progress=False).model, spec


@pytest.mark.slow
def test_noise_beats_an_untrained_substitute(default_victim, query_set):
    """Noise answers carry little of the task: it takes the default victim and budget (a 1-epoch
    victim answers almost all noise with one class). Measured: 63% against ~11% untrained."""
    task, victim, spec = default_victim
    got, base = beats_untrained(victim, spec, task, query_set, "noise", {}, 10_000)
    assert got["acc"] >= base["acc"] + 0.3 and got["fidelity"] >= base["fidelity"] + 0.3, (got, base)


@pytest.mark.slow
def test_esa_beats_an_untrained_substitute(default_victim, query_set):
    """ESA with its defaults (Bernoulli start, refit on all answers): measured 69% against ~11%."""
    task, victim, spec = default_victim
    got, base = beats_untrained(victim, spec, task, query_set, "esa", {}, 10_000)
    assert got["acc"] >= base["acc"] + 0.3 and got["fidelity"] >= base["fidelity"] + 0.3, (got, base)


# ---- the pieces -----------------------------------------------------------------------------

def test_global_threshold_rule():
    # three samples; exit costs 1, 2, 3, 4; label 0 is right
    conf = torch.tensor([[0.95, 0.97, 0.99, 0.99],   # confident and right at exit 0
                         [0.60, 0.80, 0.99, 0.99],   # exit 0 wrong; exit 1 right
                         [0.30, 0.40, 0.50, 0.99]])  # only the last exit is right
    pred = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]])
    labels = torch.zeros(3, dtype=torch.long)
    q, info = global_threshold(conf, pred, labels, [1, 2, 3, 4], tolerance=0.0)
    # every q in (0.60, 0.80] is fully accurate at the lowest cost (exits 0, 1, 3); ties go to the larger q
    assert q == pytest.approx(0.80) and info["held_out_accuracy"] == 1.0 == info["held_out_best_accuracy"]
    assert exits_at(conf, q).tolist() == [0, 1, 3]
    assert info["held_out_exit_hist"] == pytest.approx([1 / 3, 1 / 3, 0, 1 / 3])
    # a tolerance that allows one mistake in three: q in (0.50, 0.60] sends sample 1 out early and
    # wrong at exit 0 (cost 2 instead of 7/3); lower q would also send sample 2 out wrong
    q, info = global_threshold(conf, pred, labels, [1, 2, 3, 4], tolerance=0.34)
    assert q == pytest.approx(0.60) and info["held_out_accuracy"] == pytest.approx(2 / 3)
    assert exits_at(conf, q).tolist() == [0, 0, 3]
    # early exits that are always wrong: never exit early
    q, _ = global_threshold(conf, torch.tensor([[1, 1, 1, 0]] * 3), labels, [1, 2, 3, 4], tolerance=0.01)
    assert q == NEVER
    assert GRID[0] == 0.1 and GRID[-1] == NEVER and list(GRID) == sorted(GRID)


def test_baselines_get_one_global_threshold(query_set):
    for name, opts in CASES:
        # default: strategy=global, one fixed threshold (0.9), trained on every query
        stolen = ATTACKS[name](**FAST, **opts).run(tiny_oracle(budget=300).black_box(), query_set, 300, ctx())
        assert stolen.model.thresholds.tolist() == pytest.approx([0.9, 0.9, 0.9, 0.0])
        assert stolen.details["output_strategy"]["strategy"] == "global"
        assert stolen.details["train_samples"] == 300
        # today's rule, calibrated on a held-out tenth
        attack = ATTACKS[name](**FAST, **opts, strategy="owner-rule", val_fraction=0.1)
        stolen = attack.run(tiny_oracle(budget=300).black_box(), query_set, 300, ctx())
        t = stolen.model.thresholds.tolist()
        assert t[-1] == 0.0 and len(set(t[:-1])) == 1 and t[0] in [pytest.approx(g) for g in GRID]
        assert stolen.details["output_strategy"]["held_out"] is True
        assert stolen.details["output_strategy"]["held_out_samples"] == 30
    with pytest.raises(ConfigError, match="strategy must be one of global, owner-rule"):
        ATTACKS["noise"](strategy="owner")


def test_substitute_has_the_family_default_exits_not_the_victims(query_set):
    """--victim-opt exits=6: the baselines' substitutes keep sdn-tiny's default 4 exits; ours
    builds the number of exits it inferred from the timing."""
    from benchmark.timing import LatencyProfile

    six = AttackContext(seed=0, substitute=VICTIMS["sdn-tiny"](exits=6), progress=False)
    torch.manual_seed(0)
    victim = VICTIMS["sdn-tiny"](exits=6).build(10, (3, 32, 32)).eval()
    from benchmark.training import exit_confidences

    conf, _ = exit_confidences(victim, query_set.subset(1000), "cpu")
    running, t = torch.ones(len(conf), dtype=torch.bool), []
    for k in range(5):  # each exit takes about a sixth of the queries
        t.append(float(conf[running, k].quantile(1 - 1 / (6 - k))))
        running &= conf[:, k] < t[-1]
    victim.set_thresholds([*t, 0.0])
    profile = LatencyProfile(tuple(100e-6 * (k + 1) for k in range(6)), (2e-6,) * 6, "test")
    for name, opts in CASES:
        oracle = VictimOracle(victim, SimulatedTiming(profile, 0), 300)
        stolen = ATTACKS[name](**FAST, **opts).run(oracle.black_box(), query_set, 300, six)
        assert stolen.model.num_exits == 4, name
    oracle = VictimOracle(victim, SimulatedTiming(profile, 0), 300)
    stolen = ATTACKS["ours"](**FAST).run(oracle.black_box(), query_set, 300, six)
    assert stolen.model.num_exits == stolen.details["estimated_exits"] == 6


def test_holdout_and_noise():
    gen = torch.Generator().manual_seed(0)
    train, val = holdout(100, 0.1, gen)
    assert len(val) == 10 and len(train) == 90 and set(train.tolist()) | set(val.tolist()) == set(range(100))
    assert len(holdout(100, 0.0, gen)[1]) == 0
    b = noise_images(4, (3, 8, 8), gen, "bernoulli")
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    g = noise_images(4, (3, 8, 8), gen, "gaussian")
    assert g.min() >= 0 and g.max() <= 1 and 0.3 < float(g.mean()) < 0.7
    with pytest.raises(ConfigError):
        noise_images(1, (3, 8, 8), gen, "pink")


def test_knockoff_rewards():
    y = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8]])
    assert certainty_reward(y).tolist() == pytest.approx([0.5, 0.0, 0.7])
    from collections import deque
    hist = deque(maxlen=2)
    div = diversity_reward(y, hist)
    assert div[0] == 0 and div[1] == pytest.approx(0.3)  # (0.4-0.7)+ + (0.4-0.2)+ + (0.2-0.1)+
    assert div[2] == pytest.approx(0.65)  # vs mean of the first two: (0.8 - 0.15)
    assert len(hist) == 2
    scale = RunningScale()
    assert scale(torch.tensor([1.0, 3.0])).tolist() == [0.0, 1.0]
    assert scale(torch.tensor([2.0])).tolist() == [0.5]


def test_adaptive_bandit_prefers_rewarding_classes():
    """A victim that answers confidently only on query class 2: with the certainty reward the bandit
    queries class 2 far more often than uniform sampling would."""
    labels = torch.arange(8).repeat_interleave(600)
    pool = Split((labels * 20).to(torch.uint8)[:, None, None, None].expand(-1, 3, 32, 32).contiguous(), labels)

    class Box:  # a black box whose answer depends on the image's class (its grey level)
        num_classes, input_shape, budget, used = 10, (3, 32, 32), 1200, 0

        @property
        def remaining(self):
            return self.budget - self.used

        def query(self, x):
            if len(x) > self.remaining:
                raise BudgetExceeded("over")
            self.used += len(x)
            cls = (x.mean((1, 2, 3)) * 255 / 20).round().long()
            probs = torch.full((len(x), 10), 0.1)
            probs[cls == 2] = torch.tensor([0.91] + [0.01] * 9)
            return type("Response", (), {"probs": probs, "latency": torch.zeros(len(x))})

    box = Box()
    stolen = ATTACKS["knockoff"](sampling="adaptive", reward="cert", **FAST).run(box, pool, 1200, ctx())
    bandit = stolen.details["bandit"]
    assert sum(bandit["actions_hist"]) == 1200 == box.used
    # the bandit kept choosing class 2 until its 600 images ran out (uniform sampling: ~150);
    # an exhausted class leaves the action set
    assert bandit["actions_hist"][2] == 600 and bandit["final_policy"][2] == 0.0
    assert stolen.details["query_class_hist"][2] == bandit["actions_hist"][2]


def test_opt_syn_moves_inputs_towards_targets():
    torch.manual_seed(0)
    model = VICTIMS["sdn-tiny"]().build(10, (3, 32, 32))
    gen = torch.Generator().manual_seed(0)
    start = noise_images(16, (3, 32, 32), gen, "gaussian")
    targets = torch.nn.functional.one_hot(torch.arange(16) % 10, 10).float()

    def ce(x):
        with torch.no_grad():
            model.eval()
            return float(-(targets * torch.log_softmax(model(x)[-1], 1)).sum(1).mean())

    x = opt_syn(model, targets, start, steps=20, lr=0.01, device="cpu")
    assert x.shape == start.shape and x.min() >= 0 and x.max() <= 1
    assert ce(x) < ce(start)
    assert all(p.requires_grad for p in model.parameters())


def test_esa_refit_returns_a_fresh_fit_on_every_answer(query_set):
    """refit=true: the returned substitute is exactly a fresh substitute trained on all rounds'
    answers (the warm-started E-step model only chose the synthetic inputs)."""
    from attacks._baseline import build_substitute, train_substitute
    from benchmark.data import to_uint8

    seen_x, seen_p = [], []

    class Recording(CountingOracle):
        def query(self, x):
            r = self.box.query(x)
            seen_x.append(x.detach().clone())
            seen_p.append(r.probs.float())
            return r

    attack = ATTACKS["esa"](syn_size=100, opt_steps=2, val_fraction=0.0, **FAST)
    oracle = tiny_oracle(budget=1000)
    stolen = attack.run(Recording(oracle.black_box()), query_set, 300, ctx())
    assert stolen.details["refit"] and stolen.details["train_samples"] == 300
    x, p = torch.cat(seen_x), torch.cat(seen_p)
    fresh = build_substitute(oracle.black_box(), ctx())
    train_substitute(fresh, Split(to_uint8(x), torch.zeros(len(x), dtype=torch.long)), p, torch.arange(len(x)),
                     attack, ctx(), "fresh")
    for (name, a), (_, b) in zip(stolen.model.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), name
    warm = ATTACKS["esa"](syn_size=100, opt_steps=2, val_fraction=0.0, refit=False, **FAST)
    kept = warm.run(tiny_oracle(budget=1000).black_box(), query_set, 300, ctx())
    assert not all(torch.equal(a, b) for a, b in zip(kept.model.parameters(), fresh.parameters()))


def test_options_parse_from_strings():
    a = build_plugin(ATTACKS["esa"], {"syn_size": "500", "accumulate": "true", "dirichlet_alpha": "0.5"}, "attack")
    assert (a.syn_size, a.accumulate, a.dirichlet_alpha) == (500, True, 0.5)
    assert replace(a, syn_size=200).step_size() == 200


# ---- the comparison script ------------------------------------------------------------------

def load_compare():
    spec = importlib.util.spec_from_file_location("compare_attacks", ROOT / "benchmarks" / "compare_attacks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_table_and_paper_rows(tmp_path, capsys):
    mod = load_compare()
    csv = tmp_path / "t.csv"
    csv.write_text("# comment\nbackbone,dataset,method,acc,clo,cc,cc_ratio\nVGG,CIFAR10,Victim,91.75,,3133,1.00\n"
                   "VGG,CIFAR10,Knock,88.25,31.09,4432,1.41\nVGG,CIFAR10,Ours,88.33,63.27,3258,1.04\n"
                   "ResNet,CIFAR10,Ours,1,2,3,4\n")
    paper = mod.read_paper_rows(csv)
    assert paper["Ours"] == {"acc": pytest.approx(0.8833), "clo": pytest.approx(0.6327), "cc_ratio": 1.04}
    assert paper["Victim"]["clo"] is None
    scores = {"acc": 0.8, "victim_acc": 0.9, "clo": 0.7, "cc_ratio": 1.1, "fidelity": 0.85, "queries": 100}
    results = {"ours": {"scores": scores},
               "knockoff (random)": {"scores": {**scores, "clo": 0.5, "cc_ratio": 1.4, "acc": 0.79}}}
    table = mod.render_table(results, paper)
    assert "| ours | 80.0% | 70.0% | 1.10x | 85.0% | 100 | 88.3% | 63.3% | 1.04x |" in table
    assert "| knockoff (random) | 79.0% | 50.0% | 1.40x |" in table and "| victim | 90.0% |" in table
    checks = mod.ordering_checks(results)
    assert checks[0].startswith("ours has the highest clo: holds") and "closest to 1: holds" in checks[1]
    # a missing paper table fails clearly, before any run
    assert mod.main(["--paper-csv", str(tmp_path / "missing.csv")]) == 2
    err = capsys.readouterr().err
    assert "paper table not found" in err and "missing.csv" in err and err.count("\n") == 1


def test_compare_reads_the_shared_paper_table():
    mod = load_compare()
    if not mod.DEFAULT_PAPER_CSV.is_file():
        pytest.skip("../shared/reference/paper_table1.csv is not next to this checkout")
    paper = mod.read_paper_rows(mod.DEFAULT_PAPER_CSV)
    assert set(paper) == {"Victim", "Knock", "Noise", "ESA", "Ours"}
    assert paper["Noise"]["acc"] == pytest.approx(0.3374) and paper["ESA"]["cc_ratio"] == 1.45


def test_compare_over_seeds_reuses_results_and_reports_means(tmp_path, capsys):
    from benchmark.config import RunConfig

    mod = load_compare()
    csv = tmp_path / "t.csv"
    csv.write_text("backbone,dataset,method,acc,clo,cc,cc_ratio\nVGG,CIFAR10,Ours,88.33,63.27,3258,1.04\n")
    # ours wins clo and cost on seed 0, loses both on seed 1, wins on the means
    scores = {0: {"ours": (0.80, 0.70, 1.05), "noise": (0.30, 0.10, 1.60)},
              1: {"ours": (0.82, 0.60, 1.30), "noise": (0.34, 0.62, 1.20)}}
    for seed, rows in scores.items():
        for label, (acc, clo, cc) in rows.items():
            cfg = RunConfig(attack=label, defense="none", victim="sdn-tiny", dataset="synthetic",
                            query_data="synthetic-ood", budget=10_000, seed=seed, device="cpu", attack_options={})
            result = {"config": cfg.to_json(), "scores": {"acc": acc, "victim_acc": 0.9, "clo": clo, "cc_ratio": cc,
                                                          "fidelity": acc, "queries": 10_000}}
            (tmp_path / f"s{seed}").mkdir(exist_ok=True)
            (tmp_path / f"s{seed}" / f"{label}.json").write_text(json.dumps(result))
    rc = mod.main(["--seeds", "0,1", "--reuse", "--results", str(tmp_path), "--paper-csv", str(csv),
                   "--attacks", "ours,noise", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "seeds 0,1 (mean ± sd)" in out
    assert "| ours | 81.0 ± 1.4% | 65.0 ± 7.1% | 1.18 ± 0.18x |" in out
    assert "| noise | 32.0 ± 2.8% | 36.0 ± 36.8% | 1.40 ± 0.28x |" in out
    assert "- on the means, ours has the highest clo: holds" in out and "per seed it holds in 1 of 2" in out
    assert "ours has the cc_ratio closest to 1: holds" in out
    assert mod.main(["--seeds", "0,x", "--paper-csv", str(csv)]) == 2
    assert "comma-separated integers" in capsys.readouterr().err


def test_compare_interval_table_over_seeds():
    """Several seeds: each metric as mean [95% t interval]; the paper's rows of the chosen dataset."""
    mod = load_compare()
    base = {"acc": 0.8, "victim_acc": 0.9, "clo": 0.7, "clo_query": 0.6, "clo_trivial": 0.5, "cc_ratio": 1.1,
            "fidelity": 0.85, "queries": 100, "exit_accuracy": 0.9}
    per_seed = {s: {"ours": {"scores": {**base, "acc": 0.8 + 0.02 * s}}} for s in range(3)}
    paper = {"Ours": {"acc": 0.9169, "clo": 0.5749, "cc_ratio": 1.16}, "Victim": {"acc": 0.944, "cc_ratio": 1.0}}
    table = mod.render_interval_table(per_seed, paper)
    # mean 0.82, sd 0.02, t(0.975, 2) = 4.303: half width 0.0497
    assert "82.0 [77.0, 87.0]%" in table and "60.0 [60.0, 60.0]%" in table and "1.10 [1.10, 1.10]x" in table
    assert "57.5%" in table and "94.4%" in table


def test_compare_preset_fills_settings():
    mod = load_compare()
    args = mod.argparse.Namespace(preset="paper:cpu-fashionmnist", victim_opt=["epochs=2"], victim=None,
                                  dataset=None, query_data="synthetic-ood")
    mod.resolve_settings(args)
    assert (args.victim, args.dataset, args.query_data) == ("sdn-tiny", "fashionmnist", "synthetic-ood")
    assert args.victim_options == {"train_subset": 10_000, "epochs": "2"}  # parsed by the victim
    args.preset = "paper:nope"
    with pytest.raises(mod.CompareError):
        mod.resolve_settings(args)
