"""The layer-by-layer extraction: critical points -> signatures -> neurons -> signs, then the
last layer, with the time and queries of every step.

Only the ``Access`` (a BlackBox) and the public layer sizes come in; every hidden state the
attack computes comes from the layers it has recovered itself, never from the victim. Every
loop is bounded (lines, attempts, budget, time), and running out of any of them ends the
extraction with what was recovered and a statement of what was not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmark.extraction.access import Access, OutOfBudget, estimate_noise
from benchmark.extraction.critical_points import Line, random_line, sweep_line
from benchmark.extraction.network import PartialNetwork
from benchmark.extraction.signatures import (
    Neuron,
    Signature,
    fingerprint,
    first_layer_probes,
    group_fingerprints,
    group_signatures,
    hidden_probes,
    measure_jump,
    merge_signatures,
    refit_hyperplane,
    solve_signature,
)
from benchmark.extraction.signs import recover_signs
from benchmark.extraction.solve import (
    OutputLayer,
    sample_inputs,
    self_check,
    solve_output_layer,
    wrong_signs_from_solve,
)

FINGERPRINT_PROBES = 8


class OutOfTime(Exception):
    """The attack's time limit is reached."""


@dataclass(frozen=True)
class Settings:
    sign_samples: int = 15
    hard_samples: int = 100
    easy_confidence: float = 0.8
    wiggle: str = "suppress"
    scale: float = 1.0
    line_length: float = 3.0
    lines: int = 4
    max_lines: int = 64
    min_support: int = 3
    time_limit: float = 0.0
    progress: bool = False


@dataclass
class LayerLog:
    """Time and queries of one layer, split into signature and sign extraction."""

    layer: int
    neurons: int
    found: int = 0
    signature_seconds: float = 0.0
    signature_queries: int = 0
    sign_seconds: float = 0.0
    sign_queries: int = 0
    lines: int = 0
    critical_points: int = 0
    signatures: int = 0
    hard_neurons: int = 0
    min_sign_confidence: float | None = None
    signs_fixed_by_output_solve: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


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


class Extraction:
    """One extraction run (state: lines swept so far, the recovered network, the logs)."""

    def __init__(self, access: Access, sizes: tuple[int, ...], settings: Settings, rng: np.random.Generator):
        self.access = access
        self.sizes = tuple(sizes)
        self.s = settings
        self.rng = rng
        self.n0 = sizes[0]
        self.lines: list[Line] = []
        self.net = PartialNetwork(self.n0)
        self.start = time.perf_counter()
        self.fp_probes = rng.normal(size=(self.n0, FINGERPRINT_PROBES))
        self.fp_probes /= np.linalg.norm(self.fp_probes, axis=0, keepdims=True)
        self.half_length = settings.line_length * settings.scale * np.sqrt(self.n0)

    # ---- bookkeeping -----------------------------------------------------------------------

    def check_time(self) -> None:
        if self.s.time_limit and time.perf_counter() - self.start > self.s.time_limit:
            raise OutOfTime(f"time limit of {self.s.time_limit:g} s reached")

    def tol_distance(self) -> float:
        """How close (input distance) a critical point must be to a neuron's hyperplane to count as
        that neuron's: well above float64 error, widened with the measured output noise."""
        rel = self.access.noise / max(self.g_scale, 1e-300)
        return self.s.scale * max(1e-7, min(1e-2, 1e5 * rel))

    @property
    def g_scale(self) -> float:
        vals = [abs(k.value) for line in self.lines for k in line.kinks]
        return float(np.median(vals)) if vals else 1.0

    def min_step(self) -> float:
        """Shortest finite-difference step whose slope is still well above the noise."""
        rel = self.access.noise / max(self.g_scale, 1e-300)
        return self.s.scale * max(0.0, min(1e-2, 1e3 * rel)) if rel > 1e-13 else 0.0

    def sweep(self, count: int) -> list[Line]:
        new = []
        for _ in range(count):
            if len(self.lines) >= self.s.max_lines:
                break
            self.check_time()
            line = random_line(len(self.lines), self.n0, self.rng, self.s.scale, self.half_length)
            sweep_line(self.access, line, min_step=self.min_step())
            self.lines.append(line)
            new.append(line)
        return new

    def all_kinks(self) -> list[tuple[int, int]]:
        return [(line.index, i) for line in self.lines for i in range(len(line.kinks))]

    def kink_x(self, key: tuple[int, int]) -> np.ndarray:
        line = self.lines[key[0]]
        return line.point(line.kinks[key[1]].t)

    def explained(self, key: tuple[int, int]) -> bool:
        """Is this critical point on a neuron already recovered (any earlier layer)?"""
        if self.net.depth == 0:
            return False
        line = self.lines[key[0]]
        x = self.kink_x(key)
        _, _, zs, zjacs = self.net.local(x)
        tol = self.tol_distance()
        for z, zj in zip(zs, zjacs):
            rate = np.abs(zj @ line.d)
            with np.errstate(divide="ignore", invalid="ignore"):
                dist = np.where(rate > 0, np.abs(z) / rate, np.inf)
            if dist.size and dist.min() <= tol:
                return True
        return False

    # ---- first layer -----------------------------------------------------------------------

    def first_layer(self, log: LayerLog) -> list[Neuron]:
        """Signatures of layer 1: fingerprints of the critical points on the first lines, grouped;
        one full signature per group (Carlini et al.: the gradient jump is the row itself), then
        every critical point of every line that lies on the hyperplane joins the neuron, and the
        positions refine it (``refit_hyperplane``). Fakes (deeper neurons, whose critical surface
        is a hyperplane only inside one activation region) are told apart by ``select``."""
        n1 = self.sizes[1]
        full = self.n0 <= 3 * FINGERPRINT_PROBES
        prints: dict[tuple[int, int], tuple[np.ndarray, float] | None] = {}
        jumps: dict[tuple[int, int], Any] = {}
        cands: list[Neuron] = []
        assigned: set[tuple[int, int]] = set()
        fp_lines = 2
        tried_groups: set[tuple[tuple[int, int], ...]] = set()
        while True:
            self.check_time()
            if len(self.lines) < max(fp_lines, self.s.lines):
                self.sweep(max(fp_lines, self.s.lines) - len(self.lines))
                for c in cands:  # critical points on the new lines join the neurons already known
                    c.members = self._on_hyperplane(c)
                    assigned.update(c.members)
            for line in self.lines[:fp_lines]:
                for i in range(len(line.kinks)):
                    key = (line.index, i)
                    if key in prints or key in assigned:
                        continue
                    probes = first_layer_probes(self.n0) if full else self.fp_probes
                    jump = measure_jump(self.access, self.net, line, i, probes, self.rng, self.s.scale)
                    prints[key] = self._print(jump, full)
                    if jump is not None:
                        jumps[key] = jump
            keys = [k for k, v in prints.items() if v is not None and k not in assigned]
            groups = group_fingerprints([prints[k] for k in keys])
            out_of_lines = len(self.lines) >= self.s.max_lines
            for group in groups:
                members = tuple(sorted(keys[i] for i in group))
                if any(m in assigned for m in members) or members in tried_groups:
                    continue
                if len(members) < 2 and not out_of_lines:
                    continue
                tried_groups.add(members)
                neuron = self._first_layer_neuron(members, jumps, full, log)
                if neuron is None:
                    continue
                cands.append(neuron)
                assigned.update(neuron.members)
            cands = merge_duplicates(cands)
            chosen = select(cands, n1, self._sides_first, diversity=len(self.sizes) > 3,
                            tol=self.tol_distance())
            if len(chosen) == n1 and min(c.support for c in chosen) >= self.s.min_support:
                return chosen
            if out_of_lines:
                log.notes.append(f"layer 1: only {len(chosen)} of {n1} neurons found on {len(self.lines)} lines")
                return chosen
            fp_lines += 1

    def _print(self, jump, full: bool):
        """Fingerprint of a first-layer critical point. With a full signature (small inputs) it is
        the whole hyperplane ``(row, bias)``: a deeper neuron seen where a single first-layer
        neuron is active has the same *direction* as that neuron but not the same bias."""
        if jump is None:
            return None
        if not full:
            return fingerprint(jump)
        sig = solve_signature(jump, self.net)
        if sig is None:
            return None
        vec = np.append(sig.alpha, sig.beta / (self.s.scale * np.sqrt(self.n0)))
        n = np.linalg.norm(vec)
        return vec / n, sig.error * (1.0 + np.linalg.norm(jump.x) / self.s.scale)

    def _first_layer_neuron(self, members, jumps, full: bool, log: LayerLog) -> Neuron | None:
        """One neuron from a group of matching fingerprints: a full signature at a member (the one
        farthest from other critical points first), its hyperplane collects every critical point
        on it, the positions refine it. A representative whose hyperplane collects fewer than two
        of the group is not the group's neuron; the next member is tried (at most three)."""
        order = sorted(members, key=lambda k: -self.lines[k[0]].kinks[k[1]].gap)
        best = None
        for rep in order[:3]:
            if full:
                jump = jumps.get(rep)
            else:
                jump = measure_jump(self.access, self.net, self.lines[rep[0]], rep[1],
                                    first_layer_probes(self.n0), self.rng, self.s.scale)
            sig = solve_signature(jump, self.net) if jump is not None else None
            if sig is None:
                continue
            log.signatures += 1
            neuron = Neuron(sig.alpha.copy(), sig.beta, [], np.ones(self.n0, dtype=bool), sig.error)
            for _ in range(2):  # members by position, refine on them, members again
                neuron.members = self._on_hyperplane(neuron)
                if not neuron.members:
                    break
                pts = np.stack([self.kink_x(m) for m in neuron.members])
                neuron.weights, neuron.bias = refit_hyperplane(neuron.weights, neuron.bias, pts, neuron.error)
            neuron.members = self._on_hyperplane(neuron)
            hits = len(set(neuron.members) & set(members))
            if best is None or hits > best[0]:
                best = (hits, neuron)
            if hits >= min(2, len(members)):
                break
        return best[1] if best is not None and best[1].members else None

    def _on_hyperplane(self, neuron: Neuron) -> list[tuple[int, int]]:
        tol = self.tol_distance()
        out = []
        for key in self.all_kinks():
            x = self.kink_x(key)
            scale = 1.0 + np.linalg.norm(x) / self.s.scale
            if abs(neuron.weights @ x + neuron.bias) <= tol * scale:
                out.append(key)
        return out

    def _sides_first(self, neuron: Neuron, other: Neuron) -> np.ndarray:
        pts = np.stack([self.kink_x(m) for m in neuron.members])
        return pts @ other.weights + other.bias

    # ---- hidden layers ---------------------------------------------------------------------

    def hidden_layer(self, layer: int, log: LayerLog) -> list[Neuron]:
        """Signatures of layer ``layer >= 2`` through the recovered layers: a partial signature at
        every critical point no recovered neuron explains, grouped and unified (Carlini et al.,
        unifying partial solutions), refined on the positions, fakes removed by ``select``."""
        n_prev, n_l = self.sizes[layer - 1], self.sizes[layer]
        last = layer == len(self.sizes) - 2
        sigs: dict[tuple[int, int], Signature] = {}
        tried: set[tuple[int, int]] = set()
        rounds = 0
        while True:
            self.check_time()
            for key in self.all_kinks():
                if key in tried:
                    continue
                tried.add(key)
                if self.explained(key):
                    continue
                log.critical_points += 1
                x = self.kink_x(key)
                probe = hidden_probes(self.net, x, self.rng)
                if probe is None:
                    continue
                probes, support, js = probe
                jump = measure_jump(self.access, self.net, self.lines[key[0]], key[1], probes, self.rng,
                                    self.s.scale)
                if jump is None:
                    continue
                sig = solve_signature(jump, self.net, support, js)
                if sig is None:
                    continue
                log.signatures += 1
                if np.isfinite(sig.residual) and sig.residual > max(1e3 * sig.error, 1e-6):
                    continue  # the recovered layers do not explain this jump: skip it
                sigs[key] = sig
            keys = list(sigs)
            groups = group_signatures([sigs[k] for k in keys])
            cands = []
            for group in groups:
                members = [keys[i] for i in group]
                row, bias, covered, err = merge_signatures([sigs[m] for m in members], n_prev)
                neuron = Neuron(row, bias, members, covered, err)
                if neuron.complete and len(members) >= 2:
                    pts = np.stack([sigs[m].jump.x for m in members])
                    neuron.weights, neuron.bias = refit_hyperplane(neuron.weights, neuron.bias,
                                                                   self.net.hidden(pts), neuron.error)
                cands.append(neuron)
            cands = merge_duplicates(cands)
            chosen = select(cands, n_l, self._sides_hidden, diversity=not last, tol=self.tol_distance())
            done = (len(chosen) == n_l and all(c.complete for c in chosen)
                    and min(len(c.members) for c in chosen) >= self.s.min_support)
            if done:
                return chosen
            if len(self.lines) >= self.s.max_lines:
                missing = n_l - sum(1 for c in chosen if c.complete)
                log.notes.append(f"layer {layer}: {missing} of {n_l} neurons not found complete on "
                                 f"{len(self.lines)} lines")
                return [c for c in chosen if c.complete]
            rounds += 1
            n_complete = sum(1 for c in cands if c.complete and len(c.members) >= self.s.min_support)
            targets = [c for c in sorted(cands, key=lambda c: -len(c.members)) if not c.complete]
            targets = targets[:max(n_l - n_complete, 0) + 2]
            made = 0
            for c in targets:
                for coord in np.nonzero(~c.covered)[0][:2]:
                    line = self.targeted_line(c, int(coord))
                    if line is not None:
                        sweep_line(self.access, line, min_step=self.min_step())
                        self.lines.append(line)
                        made += 1
            if made == 0 or rounds % 3 == 0:
                self.sweep(2)

    def targeted_line(self, neuron: Neuron, coord: int) -> Line | None:
        """A line meant to cross ``neuron`` where hidden coordinate ``coord`` (a neuron of layer
        ``l-1``) is active, the one place its weight on ``coord`` can be seen: start from one of its
        critical points, step just into the region where ``coord`` is active, and run along the
        known part of the neuron's gradient while keeping ``coord``'s pre-activation constant."""
        if len(self.lines) >= self.s.max_lines:
            return None
        for key in neuron.members[:3]:
            x = self.kink_x(key)
            h, jac, zs, zjacs = self.net.local(x)
            z, gi = zs[-1][coord], zjacs[-1][coord]
            gg = float(gi @ gi)
            if z > 0 or gg == 0:
                continue
            x0 = x + (-z + 0.05 * self.s.scale * np.sqrt(gg)) / gg * gi
            gk = (neuron.weights * (h > 0)) @ jac
            d = gk - (gk @ gi) / gg * gi
            if np.linalg.norm(d) < 1e-12 * max(np.linalg.norm(gk), 1e-300):
                d = self.rng.normal(size=self.n0)
                d -= (d @ gi) / gg * gi
            d /= np.linalg.norm(d)
            half = 0.25 * self.half_length
            return Line(len(self.lines), x0, d, -half, half)
        return None

    def _sides_hidden(self, neuron: Neuron, other: Neuron) -> np.ndarray:
        pts = np.stack([self.kink_x(m) for m in neuron.members])
        return self.net.hidden(pts) @ other.weights + other.bias

    # ---- the whole network -----------------------------------------------------------------

    def run(self) -> ExtractionResult:
        sizes = self.sizes
        hidden_layers = len(sizes) - 2
        logs = [LayerLog(layer=i + 1, neurons=sizes[i + 1]) for i in range(hidden_layers)]
        unrecovered: list[str] = []
        recovered = [np.zeros(n, dtype=bool) for n in sizes[1:-1]]
        rows_all: list[np.ndarray] = []
        biases_all: list[np.ndarray] = []
        output_log: dict[str, Any] = {}
        self_err = None
        stop_reason = None
        current = None
        try:
            t0 = time.perf_counter()
            q0 = self.access.used
            estimate_noise(self.access, self.rng, self.s.scale)
            logs[0].signature_queries += self.access.used - q0
            logs[0].signature_seconds += time.perf_counter() - t0
            for idx in range(hidden_layers):
                current = idx
                log = logs[idx]
                layer = idx + 1
                t0, q0 = time.perf_counter(), self.access.used
                lines_before = len(self.lines)
                try:
                    neurons = self.first_layer(log) if layer == 1 else self.hidden_layer(layer, log)
                finally:
                    log.signature_seconds += time.perf_counter() - t0
                    log.signature_queries += self.access.used - q0
                    log.lines += len(self.lines) - lines_before
                log.found = len(neurons)
                rows = np.stack([n.weights for n in neurons]) if neurons else np.zeros((0, sizes[idx]))
                biases = np.array([n.bias for n in neurons])
                t0, q0 = time.perf_counter(), self.access.used
                try:
                    results = recover_signs(self.access, self.net, rows, biases, self.rng, self.s.scale,
                                            self.s.sign_samples, self.s.hard_samples, self.s.easy_confidence,
                                            self.s.wiggle) if len(rows) else []
                finally:
                    log.sign_seconds += time.perf_counter() - t0
                    log.sign_queries += self.access.used - q0
                signs = np.array([r.sign for r in results], dtype=np.float64)
                log.hard_neurons = sum(r.hard for r in results)
                log.min_sign_confidence = min((r.confidence for r in results), default=None)
                self._pending_signs = (rows, biases, signs, results)
                if len(neurons) < sizes[layer]:
                    stop_reason = f"layer {layer}: {sizes[layer] - len(neurons)} of {sizes[layer]} neurons not found"
                    rows_all.append(_pad(rows * signs[:, None], sizes[layer]))
                    biases_all.append(_pad(biases * signs, sizes[layer]))
                    recovered[idx][:len(neurons)] = [r.votes > 0 for r in results]
                    break
                if idx == hidden_layers - 1:
                    break  # the last hidden layer's signs are checked by the output solve below
                rows_all.append(rows * signs[:, None])
                biases_all.append(biases * signs)
                recovered[idx][:] = [r.votes > 0 for r in results]
                self.net.add_layer(rows * signs[:, None], biases * signs)
            else:
                pass
            current = None
            if stop_reason is None:
                rows, biases, signs, results = self._pending_signs
                t0, q0 = time.perf_counter(), self.access.used
                signs, fixed, out = self.output_layer(rows, biases, signs, results)
                logs[-1].signs_fixed_by_output_solve = fixed
                output_log = {"seconds": time.perf_counter() - t0, "queries": self.access.used - q0,
                              "residual": out.residual, "rank_deficient": out.rank_deficient}
                rows_all.append(rows * signs[:, None])
                biases_all.append(biases * signs)
                recovered[-1][:] = [r.votes > 0 or f for r, f in zip(results, self._fixed_mask)]
                self.net.add_layer(rows * signs[:, None], biases * signs)
                self.output = out
                result = self._assemble(rows_all, biases_all, out)
                self_err = self_check(self.access, lambda x: _predict(result[0], result[1], x), self.rng,
                                      self.n0, self.s.scale)
                output_log["self_check_queries"] = 64
        except (OutOfBudget, OutOfTime) as exc:
            stop_reason = f"stopped: {exc}" + (f" (while extracting layer {current + 1})" if current is not None
                                               else "")
        if stop_reason is not None:
            unrecovered.append(stop_reason)
        for idx, log in enumerate(logs):
            unrecovered.extend(log.notes)
            n = sizes[idx + 1]
            if idx < len(recovered) and not recovered[idx].all():
                missing = np.nonzero(~recovered[idx])[0]
                if len(missing) < n or idx < len(rows_all):
                    unrecovered.append(f"layer {idx + 1}: {len(missing)} of {n} neurons not recovered")
                else:
                    unrecovered.append(f"layer {idx + 1}: not extracted ({n} neurons)")
        weights, biases = self._final_weights(rows_all, biases_all)
        complete = stop_reason is None and all(r.all() for r in recovered) and (
            self_err is not None and self_err < 1e-6)
        if self_err is not None and self_err >= 1e-6:
            unrecovered.append(f"self-check: reconstruction differs from the oracle by up to {self_err:.3g} "
                               f"(relative) on fresh queries")
        return ExtractionResult(sizes, weights, biases, recovered, logs, output_log, _dedupe(unrecovered),
                                complete, self.access.noise, self_err, time.perf_counter() - self.start,
                                self.access.used)

    def output_layer(self, rows, biases, signs, results) -> tuple[np.ndarray, int, OutputLayer]:
        """Solve the last layer linearly (Carlini et al.) on random queries; when the solve shows
        wrong signs in the last hidden layer (``wrong_signs_from_solve``), flip them and solve
        again. Uses the budget reserve."""
        n_last, m = len(rows), self.sizes[-1]
        n_prev = self.net.width
        count = 2 * (n_last + n_prev + 1) + 16
        x = sample_inputs(self.rng, count, self.n0, self.s.scale)
        f = self.access.full(x, use_reserve=True)
        fixed = 0
        self._fixed_mask = np.zeros(n_last, dtype=bool)
        wrong = wrong_signs_from_solve(self.net, rows, biases, signs, x, f)
        if wrong is not None and wrong.any():
            fixed = int(wrong.sum())
            self._fixed_mask = wrong
            signs = np.where(wrong, -signs, signs)
        hidden = np.maximum((self.net.hidden(x) @ rows.T + biases) * signs, 0.0)
        out = solve_output_layer(hidden, f)
        del m
        return signs, fixed, out

    def _assemble(self, rows_all, biases_all, out: OutputLayer):
        return [*list(rows_all), out.weights], [*list(biases_all), out.bias]

    def _final_weights(self, rows_all, biases_all):
        """A full weight set of the victim's shape: unrecovered neurons and layers are zeros."""
        sizes = self.sizes
        weights, biases = [], []
        for i in range(len(sizes) - 1):
            if i < len(rows_all):
                weights.append(_pad_cols(rows_all[i], sizes[i]))
                biases.append(np.asarray(biases_all[i], dtype=np.float64))
            elif i == len(sizes) - 2 and hasattr(self, "output"):
                weights.append(self.output.weights)
                biases.append(self.output.bias)
            else:
                weights.append(np.zeros((sizes[i + 1], sizes[i])))
                biases.append(np.zeros(sizes[i + 1]))
        return weights, biases


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
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


def merge_duplicates(cands: list[Neuron]) -> list[Neuron]:
    """Groups that turn out to be the same neuron (consistent complete rows) are merged."""
    out: list[Neuron] = []
    for c in sorted(cands, key=lambda n: -len(n.members)):
        for o in out:
            if c.complete and o.complete:
                v1 = np.append(c.weights, c.bias)
                v2 = np.append(o.weights, o.bias)
                v1, v2 = v1 / np.linalg.norm(v1), v2 / np.linalg.norm(v2)
                if min(np.linalg.norm(v1 - v2), np.linalg.norm(v1 + v2)) < 1e-6:
                    o.members = sorted(set(o.members) | set(c.members))
                    break
        else:
            out.append(c)
    return out


def select(cands: list[Neuron], n: int, sides, diversity: bool, tol: float = 0.0) -> list[Neuron]:
    """The ``n`` neurons of this layer among the candidates: most members first; with
    ``diversity``, a candidate whose members all sit in one activation cell of the other chosen
    neurons (no other hyperplane separates them) is a deeper neuron seen through one fixed
    activation pattern (its critical surface is flat only inside that cell), and is replaced by
    the next candidate. Carlini et al. separate layers by the same geometric fact: a neuron of
    the current layer is a hyperplane everywhere."""
    ranked = [c for c in sorted(cands, key=lambda c: (-c.support, -len(c.members))) if c.complete]
    chosen = ranked[:n]
    if not diversity or len(ranked) <= n:
        return chosen
    rejected: set[int] = set()
    for _ in range(len(ranked)):
        bad = []
        for c in chosen:
            if len(c.members) < 3:
                continue
            split = False
            for o in chosen:
                if o is c:
                    continue
                v = sides(c, o)
                if (v > tol).any() and (v < -tol).any():
                    split = True
                    break
            if not split:
                bad.append(c)
        if not bad:
            break
        worst = min(bad, key=lambda c: (c.support, len(c.members)))
        rejected.add(id(worst))
        pool = [c for c in ranked if id(c) not in rejected and all(c is not o for o in chosen)]
        if not pool:
            break
        chosen = [c for c in chosen if c is not worst] + [pool[0]]
    return chosen
