"""The layer-by-layer extraction: critical points -> signatures -> neurons -> signs, then the
last layer, with the time and queries of every step (``run``, on an ``ExtractionState``).

Every loop is bounded (lines, attempts, budget, time), and running out of any of them ends the
extraction with what was recovered and a statement of what was not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from attacks.cryptanalytic._access import OutOfBudget, estimate_noise
from attacks.cryptanalytic._first_layer import first_layer
from attacks.cryptanalytic._hidden_layer import hidden_layer
from attacks.cryptanalytic._output_layer import output_layer, solve_checks_signs
from attacks.cryptanalytic._precision import refine_layer_row
from attacks.cryptanalytic._signs import recover_signs
from attacks.cryptanalytic._solve import self_check
from attacks.cryptanalytic._state import ExtractionState, LayerLog, OutOfTime, check_time, kink_x


@dataclass
class ExtractionResult:
    sizes: tuple[int, ...]
    weights: list[np.ndarray]
    biases: list[np.ndarray]
    recovered: list[np.ndarray]  # per hidden layer: neurons the attack believes it recovered
    logs: list[LayerLog]
    output_log: dict[str, Any]
    unrecovered: list[str]
    complete: bool
    noise: float
    self_check_error: float | None
    seconds: float
    queries: int


def run(st: ExtractionState) -> ExtractionResult:
    """Extract every hidden layer (signatures, precision, signs), then the last layer; stop
    cleanly (and say so) on budget, time or a layer that cannot be completed."""
    sizes = st.sizes
    n_hidden = len(sizes) - 2
    output_log: dict[str, Any] = {}
    self_err = None
    stop = None
    layer = 0
    try:
        t0, q0 = time.perf_counter(), st.access.used
        estimate_noise(st.access, st.rng, st.settings.scale)
        st.logs[0].signature_seconds += time.perf_counter() - t0
        st.logs[0].signature_queries += st.access.used - q0
        for layer in range(1, n_hidden + 1):
            rows, biases, results = extract_layer(st, layer)
            signs = np.array([r.sign for r in results], dtype=np.float64)
            if len(rows) < sizes[layer] and (layer < n_hidden or len(rows) == 0):
                stop = (f"layer {layer}: only {len(rows)} of {sizes[layer]} neurons found; deeper layers "
                        f"not extracted")
                keep(st, layer, rows, biases, signs, results)
                break
            if layer < n_hidden:
                keep(st, layer, rows, biases, signs, results)
                continue
            t0, q0 = time.perf_counter(), st.access.used
            signs, out, extra = output_layer(st, rows, biases, signs, results)
            output_log = {"seconds": time.perf_counter() - t0, "queries": st.access.used - q0,
                          "residual": out.residual, "rank_deficient": bool(out.rank_deficient),
                          "linear_path_neurons": 0 if extra is None else len(extra[0])}
            keep(st, layer, rows, biases, signs, results, extra)
            st.output = out
            weights, biases_ = final_weights(st)
            q0 = st.access.used
            self_err = self_check(st.access, lambda x, w=weights, b=biases_: _predict(w, b, x), st.rng,
                                  st.n0, st.settings.scale)
            output_log["self_check_queries"] = st.access.used - q0
    except (OutOfBudget, OutOfTime) as exc:
        stop = f"stopped while extracting layer {layer}: {exc}" if layer else f"stopped: {exc}"
    unrecovered = [stop] if stop else []
    for log in st.logs:
        unrecovered.extend(log.notes)
    for idx, rec in enumerate(st.recovered):
        n = sizes[idx + 1]
        if idx >= len(st.rows_all):
            unrecovered.append(f"layer {idx + 1}: not extracted (all {n} neurons missing)")
        elif not rec.all():
            unrecovered.append(f"layer {idx + 1}: {int((~rec).sum())} of {n} neurons not recovered "
                               f"(indices {np.nonzero(~rec)[0].tolist()} of the extracted layer)")
        results = st.results.get(idx + 1, [])
        hard = [i for i, r in enumerate(results) if r.confidence < st.settings.easy_confidence]
        if hard and not st.verified.get(idx + 1, False):
            unrecovered.append(f"layer {idx + 1}: signs of neurons {hard} uncertain (wiggle majority below "
                               f"{st.settings.easy_confidence:g})")
    if st.output is None:
        unrecovered.append("output layer: not solved (hidden layers incomplete); its weights are zeros")
    if self_err is not None and self_err >= 1e-6:
        unrecovered.append(f"self-check: the reconstruction differs from the oracle by up to {self_err:.3g} "
                           f"(relative) on fresh queries, so some recovered rows or signs are wrong "
                           f"(output noise floor {st.access.noise:.2g})")
    weights, biases = final_weights(st)
    complete = stop is None and all(r.all() for r in st.recovered) and self_err is not None and self_err < 1e-6
    return ExtractionResult(sizes, weights, biases, st.recovered, st.logs, output_log,
                            _dedupe(unrecovered), complete, st.access.noise, self_err,
                            time.perf_counter() - st.start, st.access.used)


def extract_layer(st: ExtractionState, layer: int):
    """Signatures (critical points, grouping, fakes out), precision improvement, then signs by
    neuron wiggle, each timed and counted. Returns (rows, biases, sign results)."""
    log = st.logs[layer - 1]
    last = layer == len(st.sizes) - 2
    t0, q0, lines0 = time.perf_counter(), st.access.used, len(st.lines)
    try:
        neurons = first_layer(st, log) if layer == 1 else hidden_layer(st, layer, log)
    finally:
        log.signature_seconds += time.perf_counter() - t0
        log.signature_queries += st.access.used - q0
        log.lines += len(st.lines) - lines0
    log.found = sum(1 for n in neurons if n.complete)
    covered = [np.ones(st.sizes[layer - 1], bool) if n.covered is None else n.covered.copy() for n in neurons]
    st.row_errors = [n.error for n in neurons]
    width = st.sizes[layer - 1]
    anchors = [np.stack([kink_x(st, m) for m in n.members]) if n.members else None for n in neurons]
    st.anchors = anchors
    rows = np.stack([n.weights for n in neurons]) if neurons else np.zeros((0, width))
    biases = np.array([n.bias for n in neurons], dtype=np.float64)
    t1, q1 = time.perf_counter(), st.access.used
    try:
        rows, biases = improve_precision(st, rows, biases, log, anchors, covered)
    finally:
        log.precision_seconds += time.perf_counter() - t1
        log.precision_queries += st.access.used - q1
        log.signature_seconds += time.perf_counter() - t1
        log.signature_queries += st.access.used - q1
    t0, q0 = time.perf_counter(), st.access.used
    hard_samples = st.settings.sign_samples if last and solve_checks_signs(rows) else st.settings.hard_samples
    try:
        results = recover_signs(st.access, st.net, rows, biases, st.rng, st.settings.scale, st.settings.sign_samples,
                                hard_samples, st.settings.easy_confidence, st.settings.wiggle,
                                anchors=anchors) if len(rows) else []
    finally:
        log.sign_seconds += time.perf_counter() - t0
        log.sign_queries += st.access.used - q0
    log.hard_neurons = sum(r.hard for r in results)
    log.min_sign_confidence = min((r.confidence for r in results), default=None)
    st.results[layer] = results
    return rows, biases, results


def improve_precision(st: ExtractionState, rows: np.ndarray, biases: np.ndarray, log: LayerLog, anchors=None,
                      covered=None):
    """Carlini et al.'s precision improvement, row by row (``_precision.refine_layer_row``).
    A row with coordinates never seen (``covered``) is refitted with a looser shift limit,
    which can find the missing weights; ``covered`` is updated in place."""
    rows, biases = rows.copy(), biases.copy()
    for k in range(len(rows)):
        cov = None if covered is None else covered[k]
        partial = cov is not None and not cov.all()
        wanted = st.settings.refine == "all" or (st.settings.refine == "auto" and
                                                  st.row_errors[k] > st.settings.refine_above)
        if not wanted and not partial:
            continue
        check_time(st)
        out = None
        for _attempt in range(3 if partial else 2):  # redraw points when a fit is not clean
            got = refine_layer_row(st.access, st.net, rows, biases, k, st.rng, st.settings.scale,
                                   anchors=None if anchors is None else anchors[k],
                                   covered=cov, max_shift=1e-3 if cov is not None and not cov.all() else 1e-6)
            if got is None:
                continue
            out = got
            rows[k], biases[k] = got[0], got[1]
            if cov is not None:
                cov |= got[3]
            if cov is None or cov.all():
                break
        if out is None:
            log.rows_not_refined += 1
            continue
        log.rows_refined += 1
        if partial and cov.all():
            log.notes.append(f"layer {log.layer}: the precision step found the missing weights of "
                             f"a partial neuron")
    if covered is not None:
        st.partial[log.layer] = [not c.all() for c in covered]
    return rows, biases


def keep(st: ExtractionState, layer: int, rows, biases, signs, results, extra=None) -> None:
    n = st.sizes[layer]
    rows = rows * signs[:, None] if len(rows) else np.zeros((0, st.sizes[layer - 1]))
    biases = biases * signs if len(rows) else np.zeros(0)
    if extra is not None and len(extra[0]):
        rows = np.concatenate([rows, extra[0]])
        biases = np.concatenate([biases, extra[1]])
    st.rows_all.append(_pad(rows, n) if len(rows) else np.zeros((n, st.sizes[layer - 1])))
    st.biases_all.append(_pad(biases, n) if len(rows) else np.zeros(n))
    fixed = st.fixed.get(layer, np.zeros(len(results), dtype=bool))
    partial = st.partial.get(layer, [False] * len(results))
    st.recovered[layer - 1][:len(results)] = [(r.votes > 0 or bool(f)) and not p
                                              for r, f, p in zip(results, fixed, partial)]
    if len(rows) == n:
        st.net.add_layer(rows, biases)


def final_weights(st: ExtractionState):
    """A full weight set of the victim's shape: what is not recovered is zeros."""
    sizes = st.sizes
    weights, biases = [], []
    for i in range(len(sizes) - 1):
        if i < len(st.rows_all):
            weights.append(_pad_cols(st.rows_all[i], sizes[i]))
            biases.append(np.asarray(st.biases_all[i], dtype=np.float64))
        elif i == len(sizes) - 2 and st.output is not None:
            weights.append(_pad_cols(st.output.weights, sizes[i]))
            biases.append(st.output.bias)
        else:
            weights.append(np.zeros((sizes[i + 1], sizes[i])))
            biases.append(np.zeros(sizes[i + 1]))
    return weights, biases


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    a = np.array(a, dtype=np.float64)  # a copy
    if len(a) >= n:
        return a[:n]
    pad = np.zeros((n - len(a), *a.shape[1:]))
    return np.concatenate([a, pad]) if len(a) else pad


def _pad_cols(a: np.ndarray, n: int) -> np.ndarray:
    if a.shape[1] == n:
        return a
    out = np.zeros((a.shape[0], n))
    out[:, :a.shape[1]] = a[:, :n]
    return out


def _dedupe(items: list[str]) -> list[str]:
    seen, out = set(), []
    for it in items:
        if it not in seen:
            seen.add(it)
            out.append(it)
    return out


def _predict(weights, biases, x: np.ndarray) -> np.ndarray:
    h = np.asarray(x, dtype=np.float64)
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = h @ w.T + b
        if i < len(weights) - 1:
            h = np.maximum(h, 0.0)
    return h

