"""The share of an attack's queries that adaptive misinformation answers with misinformation,
measured on the defense's own OOD score (the victim's max softmax probability; ``alpha > 1/2``),
for the queries ``knockoff`` (random sampling) and ``indist_augment`` send with a given seed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/misinformation_gate.py --seed 0 --budget 10000

The queries are rebuilt exactly as the attacks build them (same seed, same attack part of the
query set), the undefended victim answers them, and ``AdaptiveMisinformation.alpha`` gives each
answer's misinformation weight at every ``--tau``. Also printed: the owner's test split (what an
honest user sees).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmark.closeness import split_query_heldout  # noqa: E402
from benchmark.data import QUERY_SETS, TASKS, DataRequest  # noqa: E402
from benchmark.paths import data_dir  # noqa: E402
from benchmark.plugins import ATTACKS, DEFENSES, VICTIMS  # noqa: E402
from benchmark.zoo import load_or_train  # noqa: E402


def msp(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([torch.softmax(model.early_exit(x[i:i + 500]).logits.float(), 1).amax(1)
                          for i in range(0, len(x), 500)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=10_000)
    ap.add_argument("--tau", default="0.5,0.7,0.9")
    ap.add_argument("--seeds", type=int, default=500, help="indist_augment's seed images")
    args = ap.parse_args(argv)
    req = DataRequest(data_dir(), False, 0, (3, 32, 32))
    task = TASKS["synthetic"](req)
    model = load_or_train(VICTIMS["sdn-tiny"](), task, args.seed, "cpu", False).model
    sets = {}
    ood = split_query_heldout(QUERY_SETS["synthetic-ood"](req))[0]
    gen = torch.Generator().manual_seed(args.seed)
    sets["knockoff, synthetic-ood"] = ood.images(torch.randperm(len(ood), generator=gen)[:args.budget])
    indist = split_query_heldout(QUERY_SETS["synthetic-indist"](req))[0]
    gen = torch.Generator().manual_seed(args.seed)
    sets["knockoff, synthetic-indist"] = indist.images(torch.randperm(len(indist), generator=gen)[:args.budget])
    attack = ATTACKS["indist_augment"](seeds=args.seeds)
    data, _ = attack.queries(indist, args.budget, torch.Generator().manual_seed(args.seed))
    sets[f"indist_augment seeds={args.seeds}, synthetic-indist"] = data.images()
    sets["owner's test split (honest)"] = task.test.images()
    taus = [float(t) for t in args.tau.split(",")]
    print(f"seed {args.seed}, budget {args.budget}: share of answers misinformed (alpha > 1/2) at tau "
          + ", ".join(map(str, taus)) + "; median victim max softmax")
    for name, x in sets.items():
        s = msp(model, x)
        shares = [float((DEFENSES["adaptive_misinformation"](tau=t).alpha(s[:, None]) > 0.5).double().mean())
                  for t in taus]
        print(f"| {name} | {len(x)} | " + " | ".join(f"{v:.3f}" for v in shares) + f" | {float(s.median()):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
