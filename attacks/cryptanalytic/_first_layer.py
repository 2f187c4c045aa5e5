"""Signatures of the first hidden layer: fingerprints of critical points, grouped, one full
signature per group, refined on every critical point that lies on its hyperplane."""

from __future__ import annotations

from typing import Any

import numpy as np

from attacks.cryptanalytic._select import merge_duplicates, select
from attacks.cryptanalytic._signatures import (
    Neuron,
    fingerprint,
    first_layer_probes,
    group_fingerprints,
    measure_jump,
    refit_hyperplane,
    solve_signature,
)
from attacks.cryptanalytic._state import (
    FINGERPRINT_PROBES,
    ExtractionState,
    LayerLog,
    all_kinks,
    check_time,
    kink_x,
    sweep,
    tol_distance,
)


def first_layer(st: ExtractionState, log: LayerLog) -> list[Neuron]:
    """Signatures of layer 1: fingerprints of the critical points on the first lines, grouped;
    one full signature per group (Carlini et al.: the gradient jump is the row itself), then
    every critical point of every line that lies on the hyperplane joins the neuron, and the
    positions refine it (``refit_hyperplane``). Fakes (deeper neurons, whose critical surface
    is a hyperplane only inside one activation region) are told apart by ``select``."""
    s = st.settings
    n1 = st.sizes[1]
    full = st.n0 <= 3 * FINGERPRINT_PROBES
    prints: dict[tuple[int, int], tuple[np.ndarray, float] | None] = {}
    jumps: dict[tuple[int, int], Any] = {}
    cands: list[Neuron] = []
    assigned: set[tuple[int, int]] = set()
    fp_lines = 2
    tried_groups: set[tuple[tuple[int, int], ...]] = set()
    while True:
        check_time(st)
        if len(st.lines) < max(fp_lines, s.lines):
            sweep(st, max(fp_lines, s.lines) - len(st.lines))
            for c in cands:  # critical points on the new lines join the neurons already known
                c.members = on_hyperplane(st, c)
                assigned.update(c.members)
        for line in st.lines[:fp_lines]:
            for i in range(len(line.kinks)):
                key = (line.index, i)
                if key in prints or key in assigned:
                    continue
                probes = first_layer_probes(st.n0) if full else st.fp_probes
                jump = measure_jump(st.access, st.net, line, i, probes, st.rng, s.scale)
                prints[key] = _print(st, jump, full)
                if jump is not None:
                    jumps[key] = jump
        keys = [k for k, v in prints.items() if v is not None and k not in assigned]
        groups = group_fingerprints([prints[k] for k in keys])
        out_of_lines = len(st.lines) >= s.max_lines
        for group in groups:
            members = tuple(sorted(keys[i] for i in group))
            if any(m in assigned for m in members) or members in tried_groups:
                continue
            if len(members) < 2 and not out_of_lines:
                continue
            tried_groups.add(members)
            neuron = _first_layer_neuron(st, members, jumps, full, log)
            if neuron is None:
                continue
            cands.append(neuron)
            assigned.update(neuron.members)
        cands = merge_duplicates(cands)
        chosen = select(cands, n1, lambda neuron, other: _sides(st, neuron, other), diversity=len(st.sizes) > 3,
                        tol=tol_distance(st))
        if len(chosen) == n1 and min(c.support for c in chosen) >= s.min_support:
            return chosen
        if out_of_lines:
            log.notes.append(f"layer 1: only {len(chosen)} of {n1} neurons found on {len(st.lines)} lines")
            return chosen
        fp_lines += 1


def _print(st: ExtractionState, jump, full: bool):
    """Fingerprint of a first-layer critical point. With a full signature (small inputs) it is
    the whole hyperplane ``(row, bias)``: a deeper neuron seen where a single first-layer
    neuron is active has the same *direction* as that neuron but not the same bias."""
    if jump is None:
        return None
    if not full:
        return fingerprint(jump)
    sig = solve_signature(jump, st.net)
    if sig is None:
        return None
    vec = np.append(sig.alpha, sig.beta / (st.settings.scale * np.sqrt(st.n0)))
    n = np.linalg.norm(vec)
    return vec / n, sig.error * (1.0 + np.linalg.norm(jump.x) / st.settings.scale)


def _first_layer_neuron(st: ExtractionState, members, jumps, full: bool, log: LayerLog) -> Neuron | None:
    """One neuron from a group of matching fingerprints: a full signature at a member (the one
    farthest from other critical points first), its hyperplane collects every critical point
    on it, the positions refine it. A representative whose hyperplane collects fewer than two
    of the group is not the group's neuron; the next member is tried (at most three)."""
    order = sorted(members, key=lambda k: -st.lines[k[0]].kinks[k[1]].gap)
    best = None
    for rep in order[:3]:
        if full:
            jump = jumps.get(rep)
        else:
            jump = measure_jump(st.access, st.net, st.lines[rep[0]], rep[1],
                                first_layer_probes(st.n0), st.rng, st.settings.scale)
        sig = solve_signature(jump, st.net) if jump is not None else None
        if sig is None:
            continue
        log.signatures += 1
        neuron = Neuron(sig.alpha.copy(), sig.beta, [], np.ones(st.n0, dtype=bool), sig.error)
        for _ in range(2):  # members by position, refine on them, members again
            neuron.members = on_hyperplane(st, neuron)
            if not neuron.members:
                break
            pts = np.stack([kink_x(st, m) for m in neuron.members])
            neuron.weights, neuron.bias = refit_hyperplane(neuron.weights, neuron.bias, pts, neuron.error)
        neuron.members = on_hyperplane(st, neuron)
        hits = len(set(neuron.members) & set(members))
        if best is None or hits > best[0]:
            best = (hits, neuron)
        if hits >= min(2, len(members)):
            break
    return best[1] if best is not None and best[1].members else None


def on_hyperplane(st: ExtractionState, neuron: Neuron) -> list[tuple[int, int]]:
    """The critical points (of every line) on the neuron's hyperplane."""
    tol = tol_distance(st)
    out = []
    for key in all_kinks(st):
        x = kink_x(st, key)
        scale = 1.0 + np.linalg.norm(x) / st.settings.scale
        if abs(neuron.weights @ x + neuron.bias) <= tol * scale:
            out.append(key)
    return out


def _sides(st: ExtractionState, neuron: Neuron, other: Neuron) -> np.ndarray:
    pts = np.stack([kink_x(st, m) for m in neuron.members])
    return pts @ other.weights + other.bias
