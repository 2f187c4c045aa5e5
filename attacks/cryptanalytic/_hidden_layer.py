"""Signatures of a hidden layer ``l >= 2``, through the layers already recovered: partial
signatures at the critical points no recovered neuron explains, grouped, unified and refined;
targeted and exploration lines for the neurons still incomplete or never seen; and the check of
layer ``l-1``'s signs against layer ``l``'s gradient jumps."""

from __future__ import annotations

import numpy as np

from attacks.cryptanalytic._critical_points import Line, sweep_line
from attacks.cryptanalytic._select import join_groups, merge_duplicates, select
from attacks.cryptanalytic._signatures import (
    Jump,
    Neuron,
    Signature,
    group_signatures,
    hidden_probes,
    measure_jump,
    merge_signatures,
    refit_hyperplane,
    solve_signature,
)
from attacks.cryptanalytic._state import (
    ExtractionState,
    LayerLog,
    all_kinks,
    check_time,
    explained,
    kink_x,
    min_step,
    sweep,
    tol_distance,
)


def hidden_layer(st: ExtractionState, layer: int, log: LayerLog) -> list[Neuron]:
    """Signatures of layer ``layer >= 2`` through the recovered layers: a partial signature at
    every critical point no recovered neuron explains, grouped and unified (Carlini et al.,
    unifying partial solutions), refined on the positions, fakes removed by ``select``."""
    n_prev, n_l = st.sizes[layer - 1], st.sizes[layer]
    last = layer == len(st.sizes) - 2
    sigs: dict[tuple[int, int], Signature] = {}
    jumps: dict[tuple[int, int], Jump] = {}
    tried: set[tuple[int, int]] = set()
    rounds = 0
    checked_signs = 0
    best_complete, stalled = -1, 0
    while True:
        check_time(st)
        for key in all_kinks(st):
            if key in tried:
                continue
            tried.add(key)
            if explained(st, key):
                continue
            log.critical_points += 1
            x = kink_x(st, key)
            probe = hidden_probes(st.net, x, st.rng)
            if probe is None:
                continue
            probes, support, js = probe
            jump = measure_jump(st.access, st.net, st.lines[key[0]], key[1], probes, st.rng,
                                st.settings.scale)
            if jump is None:
                continue
            jumps[key] = jump
            log.signatures += 1
            sig = solve_signature(jump, st.net, support, js)
            if sig is not None and explained_by_model(sig):
                sigs[key] = sig
        if len(jumps) >= 10 and len(jumps) >= checked_signs + 10 and not st.verified.get(layer - 1):
            checked_signs = len(jumps)  # check again whenever ten more jumps are in
            flipped = repair_previous_signs(st, layer, list(jumps.values()))
            if flipped:
                log.notes.append(f"layer {layer - 1}: signs of neurons {flipped} flipped (the layer "
                                 f"{layer} gradient jumps were not explained with the wiggle's signs)")
                sigs = {}
                for key, jump in jumps.items():
                    sig = solve_signature(jump, st.net)
                    if sig is not None and explained_by_model(sig):
                        sigs[key] = sig
        keys = list(sigs)
        groups = group_signatures([sigs[k] for k in keys], n_prev)
        groups = join_groups(groups, [sigs[k] for k in keys], n_prev)
        cands = []
        for group in groups:
            members = [keys[i] for i in group]
            row, bias, covered, err = merge_signatures([sigs[m] for m in members], n_prev)
            err = max(sigs[m].error for m in members)  # pessimistic: decides the precision step
            neuron = Neuron(row, bias, members, covered, err)
            if neuron.complete and len(members) >= 2:
                pts = np.stack([sigs[m].jump.x for m in members])
                neuron.weights, neuron.bias = refit_hyperplane(neuron.weights, neuron.bias,
                                                               st.net.hidden(pts), neuron.error)
            cands.append(neuron)
        cands = merge_duplicates(cands)
        chosen = select(cands, n_l, lambda neuron, other: _sides(st, neuron, other), diversity=not last,
                        tol=tol_distance(st))
        done = (len(chosen) == n_l and all(c.complete for c in chosen)
                and min(len(c.members) for c in chosen) >= st.settings.min_support)
        if done:
            return chosen
        n_complete = sum(1 for c in cands if c.complete and len(c.members) >= st.settings.min_support)
        if n_complete > best_complete:
            best_complete, stalled = n_complete, 0
        else:
            stalled += 1
        if len(st.lines) >= st.settings.max_lines or stalled > st.settings.patience:
            missing = n_l - sum(1 for c in chosen if c.complete)
            why = "lines exhausted" if len(st.lines) >= st.settings.max_lines else \
                f"no progress in {st.settings.patience} rounds"
            log.notes.append(f"layer {layer}: {missing} of {n_l} neurons not found complete on "
                             f"{len(st.lines)} lines ({why})")
            full = [c for c in chosen if c.complete]
            # fill up with the best partial rows (weights never seen are zero for now; the
            # precision step may still find them)
            partial = [c for c in sorted(cands, key=lambda c: -len(c.members))
                       if not c.complete and len(c.members) >= st.settings.min_support]
            return full + partial[:n_l - len(full)]
        rounds += 1
        targets = [c for c in sorted(cands, key=lambda c: -len(c.members)) if not c.complete]
        targets = targets[:max(n_l - n_complete, 0) + 2]
        made = 0
        for c in targets:
            check_time(st)
            missing = np.nonzero(~c.covered)[0]
            # all missing coordinates at once, then single ones (the neuron's critical surface
            # may not reach the region where all of them are active together)
            subsets = [missing] + [np.array([int(st.rng.choice(missing))]) for _ in range(2)]
            for subset in subsets[:1 if len(missing) == 1 else 3]:
                line = targeted_line(st, c, subset)
                if line is not None:
                    sweep_line(st.access, line, min_step=min_step(st))
                    st.lines.append(line)
                    made += 1
        if made == 0 or rounds % 3 == 0:
            sweep(st, 2)
        if rounds >= 2 and len([c for c in cands if len(c.members) >= 1]) < n_l:
            # some neuron has never been seen critical: look where few neurons of layer l-1
            # are active (a neuron with a large bias is critical only there)
            for _ in range(2):
                line = exploration_line(st)
                if line is not None:
                    sweep_line(st.access, line, min_step=min_step(st))
                    st.lines.append(line)


def repair_previous_signs(st: ExtractionState, layer: int, jumps: list[Jump]) -> list[int]:
    """Check the signs of layer ``layer - 1`` against the gradient jumps measured for layer
    ``layer`` (query-free; our addition to the sign step, used where the wiggle is weakest).

    A wrong sign for neuron ``j`` of layer ``l-1`` flips its activity in the recovered model:
    wherever ``j`` is truly active but modelled inactive, the jump (measured along more probes
    than unknowns) has a component the model cannot produce, a residual. For every jump the
    model does not explain, each neuron ``j`` modelled inactive there is tried as active; if
    that alone explains the jump, ``j`` gets a vote ("active here: its sign is wrong"). The
    most voted neuron is flipped (at least two votes), and the vote repeated. Returns the
    flipped neuron indices."""
    flipped: list[int] = []
    width = st.net.width
    previous = None
    for _ in range(width):
        votes = np.zeros(width)
        unexplained = 0
        for jump in jumps:
            sig = solve_signature(jump, st.net)
            if sig is not None and explained_by_model(sig):
                continue
            unexplained += 1
            h, _jac, zs, zjacs = st.net.local(jump.x)
            active = h > 0
            q = jump.probes.shape[1]
            for j in np.nonzero(~active & (zs[-1] != 0))[0]:
                trial = active.copy()
                trial[j] = True
                support = np.nonzero(trial)[0]
                if support.size >= min(q, st.n0):
                    continue  # no degree of freedom left to test the fit
                js = zjacs[-1][support]
                test = solve_signature(jump, st.net, support, js)
                if test is not None and explained_by_model(test):
                    votes[j] += 1
        if previous is not None and unexplained >= previous:
            flip_last(st, flipped.pop())  # the last flip explained nothing more: undo it
            break
        if unexplained <= 0.05 * len(jumps):
            st.verified[layer - 1] = True  # the next layer's jumps confirm these signs
            break
        votes[flipped] = 0
        j = int(np.argmax(votes))
        if votes[j] < 2:
            break
        flip_last(st, j)
        flipped.append(j)
        previous = unexplained
    return flipped


def flip_last(st: ExtractionState, j: int) -> None:
    """Flip the sign of neuron ``j`` of the last recovered layer (and the stored copy)."""
    st.net.weights[-1][j] *= -1
    st.net.biases[-1][j] *= -1
    idx = st.net.depth - 1
    if idx < len(st.rows_all):
        st.rows_all[idx][j] *= -1
        st.biases_all[idx][j] *= -1


def exploration_line(st: ExtractionState) -> Line | None:
    """A random line through a region where only a few random neurons of the last recovered
    layer are active (found by a least-norm step on the recovered layers, no query)."""
    if len(st.lines) >= st.settings.max_lines or st.net.depth == 0:
        return None
    width = st.net.width
    x = st.rng.normal(size=st.n0) * st.settings.scale
    chosen = st.rng.permutation(width)[:int(st.rng.integers(1, max(2, width // 4) + 1))]
    sign = -np.ones(width)
    sign[chosen] = 1.0
    for _ in range(3):
        _, _, zs, zjacs = st.net.local(x)
        g = zjacs[-1]
        norms = np.maximum(np.linalg.norm(g, axis=1), 1e-300)
        target = 0.1 * st.settings.scale * norms * sign
        step, *_ = np.linalg.lstsq(g, target - zs[-1], rcond=None)
        x = x + step
    d = st.rng.normal(size=st.n0)
    d /= np.linalg.norm(d)
    half = 0.5 * st.half_length
    return Line(len(st.lines), x, d, -half, half)


def targeted_line(st: ExtractionState, neuron: Neuron, coords: np.ndarray) -> Line | None:
    """A line meant to cross ``neuron`` where the hidden coordinates ``coords`` (neurons of
    layer ``l-1`` never active at its critical points so far) are active, the only place its
    weights on them can be seen: from one of its critical points, step (least norm) to where
    all of them are slightly positive, then run along the known part of the neuron's gradient
    while keeping their pre-activations constant (exactly so when layer ``l-1`` is the first)."""
    if len(st.lines) >= st.settings.max_lines or len(coords) == 0:
        return None
    order = st.rng.permutation(len(neuron.members))[:3]
    for key in [neuron.members[i] for i in order]:
        x = kink_x(st, key)
        h, jac, zs, zjacs = st.net.local(x)
        # too many active neurons for the input dimension make a critical point unusable
        # (expansive layers): switch off the weakest active ones to make room
        active = np.nonzero(h > 0)[0]
        excess = len(active) + len(coords) - (st.n0 - 2)
        off = active[np.argsort(zs[-1][active])[:max(excess, 0)]] if excess > 0 else np.zeros(0, int)
        cons = np.concatenate([coords, off]).astype(int)
        z, g = zs[-1][cons], zjacs[-1][cons]
        norms = np.linalg.norm(g, axis=1)
        if np.any(norms == 0) or len(cons) >= st.n0:
            continue
        target = 0.05 * st.settings.scale * norms * np.where(np.arange(len(cons)) < len(coords), 1.0, -1.0)
        step, *_ = np.linalg.lstsq(g, target - z, rcond=None)
        x0 = x + step
        gk = (neuron.weights * (h > 0)) @ jac
        gk = gk + 0.3 * np.linalg.norm(gk) * st.rng.normal(size=st.n0) / np.sqrt(st.n0)
        q, _ = np.linalg.qr(g.T)
        d = gk - q @ (q.T @ gk)
        if np.linalg.norm(d) < 1e-9 * max(np.linalg.norm(gk), 1e-300):
            d = st.rng.normal(size=st.n0)
            d -= q @ (q.T @ d)
        norm = np.linalg.norm(d)
        if norm == 0:
            continue
        half = 0.25 * st.half_length
        return Line(len(st.lines), x0, d / norm, -half, half)
    return None


def _sides(st: ExtractionState, neuron: Neuron, other: Neuron) -> np.ndarray:
    pts = np.stack([kink_x(st, m) for m in neuron.members])
    return st.net.hidden(pts) @ other.weights + other.bias


def explained_by_model(sig: Signature) -> bool:
    """Does the recovered model explain this jump (small residual on the extra probes)?"""
    return not (np.isfinite(sig.residual) and sig.residual > max(1e3 * sig.error, 1e-6))
