"""Figures for ``python -m benchmark report`` (matplotlib, Agg backend: no display needed).

- ``kde``: the attacker's KDE of response times with the exit boundaries it found (attack ``ours``
  stores a downsampled density and the boundaries in ``attack.details``), and the victim's true
  per-exit mean latencies (its latency profile, before any defense) for reference;
- ``exit_histograms``: the fraction of test samples leaving at each exit, victim vs stolen model;
- ``tradeoff``: per defense, the attack's success (CLO, ACC) against what the defense costs its
  owner (added latency, accuracy lost), one colour per attack.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)  # atomic: an interrupted report leaves no half-written image
    return path


def has_kde(result: dict) -> bool:
    kde = (result.get("attack", {}).get("details") or {}).get("kde")
    return isinstance(kde, dict) and bool(kde.get("grid_s")) and bool(kde.get("density"))


def kde(result: dict, path: Path, title: str) -> Path:
    details = result["attack"]["details"]
    grid = np.asarray(details["kde"]["grid_s"]) * 1e3
    density = np.asarray(details["kde"]["density"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(grid, density, color="tab:blue", lw=1.5, label="KDE of response times")
    ax.fill_between(grid, density, color="tab:blue", alpha=0.15)
    for i, b in enumerate(details.get("boundaries_s") or []):
        ax.axvline(b * 1e3, color="tab:red", ls="--", lw=1.2, label="found exit boundary" if i == 0 else None)
    means = (result.get("victim", {}).get("latency_profile") or {}).get("mean") or []
    for i, m in enumerate(means):
        ax.axvline(m * 1e3, color="0.4", ls=":", lw=1, label="victim exit mean (undefended)" if i == 0 else None)
    found = details.get("estimated_exits")
    true = result.get("victim", {}).get("num_exits")
    ax.set_title(f"{title}\nexits found: {found}, victim exits: {true}", fontsize=9)
    ax.set_xlabel("response time (ms)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def exit_histograms(result: dict, path: Path, title: str) -> Path:
    scores = result["scores"]
    victim = list(scores.get("victim_exit_hist") or [])
    stolen = list(scores.get("stolen_exit_hist") or [])
    k = max(len(victim), len(stolen), 1)
    x = np.arange(k)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.bar(x - 0.2, victim + [0] * (k - len(victim)), 0.4, label=f"victim ({len(victim)} exits)", color="tab:gray")
    ax.bar(x + 0.2, stolen + [0] * (k - len(stolen)), 0.4, label=f"stolen ({len(stolen)} exits)", color="tab:orange")
    ax.set_xticks(x, [str(i + 1) for i in x])
    ax.set_xlabel("exit")
    ax.set_ylabel("fraction of test samples")
    ax.set_ylim(0, 1)
    clo = scores.get("clo")
    ax.set_title(f"{title}\nCLO = {clo:.3f}" if isinstance(clo, (int, float)) else title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def tradeoff(summary: pd.DataFrame, path: Path, title: str) -> Path:
    """``summary``: one row per (attack, defense) with mean clo, acc, added_latency_ms, accuracy_lost."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), sharey="row")
    attacks = list(dict.fromkeys(summary["attack"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = [("clo", "added_latency_ms", "added latency (ms)"), ("clo", "accuracy_lost", "accuracy lost"),
              ("acc", "added_latency_ms", "added latency (ms)"), ("acc", "accuracy_lost", "accuracy lost")]
    for ax, (score, cost, xlabel) in zip(axes.flat, panels):
        for i, attack in enumerate(attacks):
            rows = summary[summary["attack"] == attack]
            ax.scatter(rows[cost], rows[score], color=colors[i % len(colors)], s=40, label=attack, zorder=3)
        names: dict[tuple, list[str]] = {}  # one label per point, defenses at the same point joined
        for _, row in summary.iterrows():
            if pd.notna(row[cost]) and pd.notna(row[score]):
                at = names.setdefault((round(float(row[cost]), 9), round(float(row[score]), 9)), [])
                if row["defense"] not in at:
                    at.append(str(row["defense"]))
        for (x, y), labels in names.items():
            ax.annotate(" / ".join(labels), (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel(f"defense cost: {xlabel}")
        ax.set_ylabel(f"attack success: {score.upper()}")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, title="attack", title_fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
