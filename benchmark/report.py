"""Tables of results (pandas + tabulate)."""

from __future__ import annotations

import pandas as pd

MAIN_SCORES = ("acc", "victim_acc", "clo", "fidelity", "clo_and_fidelity", "cc_ratio", "exit_accuracy",
               "exit_accuracy_baseline", "queries", "attack_seconds")


def _fmt(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def scores_table(result: dict) -> str:
    """A two-column table of one result's headline scores."""
    scores = result["scores"]
    rows = [(k, _fmt(scores.get(k))) for k in MAIN_SCORES if k in scores]
    cost = result.get("defense", {}).get("cost", {})
    for key in ("accuracy_lost", "added_latency_mean_s"):
        if key in cost:
            rows.append((f"defense {key}", _fmt(cost[key])))
    energy = scores.get("energy_j_per_sample")
    if isinstance(energy, dict):
        for who, value in energy.items():
            rows.append((f"energy J/sample ({who})", _fmt(value) if value is not None
                         else f"null ({scores.get('energy_reason')})"))
    cfg = result["config"]
    title = f"{cfg['attack']} vs {cfg['victim']}/{cfg['dataset']} + {cfg['defense']} (seed {cfg['seed']})"
    return title + "\n" + pd.DataFrame(rows, columns=["score", "value"]).to_markdown(index=False)
