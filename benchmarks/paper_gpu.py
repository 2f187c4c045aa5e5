"""The multi-exit paper's Fashion-MNIST rows with the full-size SDN victims, on one GPU.

    python benchmarks/paper_gpu.py --device cuda --data-root DIR          # VGG16, ResNet56, MobileNet
    python benchmarks/paper_gpu.py --device cpu --tiny                    # the same path on a CPU, a check

The GPU version of ``--preset paper:cpu-fashionmnist``: for each backbone, every attack of Table 1
(``benchmarks/compare_attacks.py``) against ``--preset paper:<backbone>-fashionmnist`` (SDN victim
with SDN's exits, trained on the real Fashion-MNIST training split), with the 5,000 real MNIST
digits as the query set in place of TinyImageNet (which needs a download), over ``--seeds``, each
table beside the paper's rows for that backbone. ``DIR`` holds the four Fashion-MNIST idx files
(plain or ``.gz``; without it the Debian package's location is used).

Sized to finish in about ten minutes on one H200 (an estimate from the FLOPs of the three networks,
not yet measured): victims train ``--victim-epochs`` epochs (default 15, the paper's SDN recipe
uses 100), attacks keep their defaults, two seeds. ``--tiny`` shrinks everything (200 training
images, one epoch, 250 queries, one seed, the ``flops`` timing profile) so that the whole path runs
on a CPU (25 min for MobileNet with two attacks on 2 loaded cores): it checks the script, its
numbers mean nothing. Tables go to ``--out`` (Markdown, one section per backbone) and results to ``--results``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

BACKBONES = {"vgg16": "VGG", "resnet56": "ResNet", "mobilenet": "MobileNet"}


def compare_args(backbone: str, args: argparse.Namespace) -> list[str]:
    """The ``compare_attacks.py`` command line for one backbone."""
    out = ["--preset", f"paper:{backbone}-fashionmnist", "--query-data", "mnist", "--device", args.device,
           "--seeds", args.seeds, "--paper-backbone", BACKBONES[backbone], "--paper-dataset", "FMNIST",
           "--victim-opt", f"epochs={args.victim_epochs}", "--results", str(args.results / backbone),
           "--markdown", str(args.results / f"{backbone}.md"), "--reuse", "--quiet",
           "--timing-profile", args.timing_profile]
    if args.attacks:
        out += ["--attacks", args.attacks]
    if args.tiny:
        out += ["--victim-opt", "train_subset=200", "--attack-opt", "epochs=1", "--budget", "250"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated: vgg16,resnet56,mobilenet")
    p.add_argument("--seeds", default="0-1")
    p.add_argument("--victim-epochs", dest="victim_epochs", type=int, default=15)
    p.add_argument("--attacks", help="comma-separated row labels of compare_attacks.py (default: all)")
    p.add_argument("--timing-profile", dest="timing_profile", default="calibrated")
    p.add_argument("--results", type=Path, default=ROOT / "results" / "paper-gpu")
    p.add_argument("--out", type=Path, help="Markdown file with every backbone's tables")
    p.add_argument("--tiny", action="store_true", help="a few minutes on a CPU: checks the path, not a result")
    args = p.parse_args(argv)
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    unknown = [b for b in backbones if b not in BACKBONES]
    if unknown or not backbones:
        print(f"error: --backbones must name some of {', '.join(BACKBONES)}, got {args.backbones!r}", file=sys.stderr)
        return 2
    if args.tiny:
        args.seeds, args.victim_epochs, args.timing_profile = args.seeds if args.seeds != "0-1" else "0", 1, "flops"
    import compare_attacks  # a sibling script, on sys.path above

    sections = []
    t0 = time.perf_counter()
    for backbone in backbones:
        t1 = time.perf_counter()
        rc = compare_attacks.main(compare_args(backbone, args))
        if rc != 0:
            return rc
        seconds = time.perf_counter() - t1
        table = (args.results / f"{backbone}.md").read_text()
        sections.append(f"## SDN {backbone} on Fashion-MNIST ({seconds:.0f} s)\n\n{table}")
    text = "\n".join(sections) + f"\nTotal: {time.perf_counter() - t0:.0f} s on {args.device}\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
