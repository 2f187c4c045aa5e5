"""Exit mix of each owner exit rule (victim option ``exit_rule``) on one trained ``sdn-tiny``, and
the best closeness any single global confidence threshold reaches against it on the victim's own
confidences (docs/victims.md, "The owner's exit rule").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/exit_rule_mix.py [--epochs 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from attacks._baseline import GRID, exits_at
from benchmark.data import TASKS, DataRequest
from benchmark.metrics import exit_histogram, run_early_exit
from benchmark.plugins import VICTIMS
from benchmark.training import exit_confidences


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    task = TASKS["synthetic"](DataRequest(Path("unused")))
    t0 = time.time()
    base = VICTIMS["sdn-tiny"](epochs=args.epochs)
    net = base.build(task.num_classes, task.input_shape)
    base.train(net, task, args.seed, "cpu", progress=False)
    print(f"trained in {time.time() - t0:.0f} s")
    rules = [("owner", ()), ("balanced", ()), ("balanced", (0.1, 0.2, 0.3, 0.4)), ("balanced", (0.4, 0.1, 0.4, 0.1)),
             ("balanced", (0.1, 0.4, 0.1, 0.4)), ("per-class", ())]
    for rule, mix in rules:
        spec = VICTIMS["sdn-tiny"](epochs=args.epochs, exit_rule=rule, exit_mix=mix)
        m = spec.build(task.num_classes, task.input_shape)
        m.load_state_dict(net.state_dict(), strict=False)
        m.eval()
        spec.set_exit_rule(m, task, "cpu")
        r = run_early_exit(m, task.test, "cpu")
        conf, _ = exit_confidences(m, task.test, "cpu")
        best, q = max((float((exits_at(conf.clone(), q).long() == r.exits).double().mean()), q) for q in GRID)
        acc = float((r.pred == task.test.y).double().mean())
        shares = " / ".join(f"{100 * h:.1f}" for h in exit_histogram(r.exits, m.num_exits))
        shown = [round(float(t), 3) for t in m.thresholds]
        print(f"{rule:10s} {','.join(map(str, mix)) or '-':15s} exit mix {shares} %  acc {acc:.3f}  thresholds {shown}"
              f"  best global-threshold clo {best:.3f} (q={q})")


if __name__ == "__main__":
    main()
