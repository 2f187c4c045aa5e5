"""The layer-by-layer extraction: critical points -> signatures -> neurons -> signs, then the
last layer, with the time and queries of every step.

Only the ``Access`` (a BlackBox) and the public layer sizes come in; every hidden state the
attack computes comes from the layers it has recovered itself, never from the victim. Every
loop is bounded (lines, attempts, budget, time), and running out of any of them ends the
extraction with what was recovered and a statement of what was not.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attacks.cryptanalytic._access import Access, OutOfBudget, estimate_noise
from attacks.cryptanalytic._critical_points import Line, random_line, sweep_line
from attacks.cryptanalytic._network import PartialNetwork
from attacks.cryptanalytic._precision import refine_layer_row
from attacks.cryptanalytic._signatures import (
    Jump,
    Neuron,
    Signature,
    UnionFind,
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
from attacks.cryptanalytic._signs import layer_values, point_on_neuron, recover_signs
from attacks.cryptanalytic._solve import (
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
    max_lines: int = 0  # 0: max(64, 2 * widest layer + 16)
    patience: int = 10
    min_support: int = 3
    refine: str = "auto"  # auto: rows whose signature error estimate exceeds refine_above; all; off
    refine_above: float = 1e-10
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
    precision_seconds: float = 0.0
    precision_queries: int = 0
    rows_refined: int = 0
    rows_not_refined: int = 0
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
        if not settings.max_lines:
            self.s = dataclasses.replace(settings, max_lines=max(64, 2 * max(sizes[1:-1]) + 16))

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
        jumps: dict[tuple[int, int], Jump] = {}
        tried: set[tuple[int, int]] = set()
        rounds = 0
        checked_signs = 0
        best_complete, stalled = -1, 0
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
                jumps[key] = jump
                log.signatures += 1
                sig = solve_signature(jump, self.net, support, js)
                if sig is not None and _explained_by_model(sig):
                    sigs[key] = sig
            if len(jumps) >= 10 and len(jumps) >= checked_signs + 10 and not self._verified.get(layer - 1):
                checked_signs = len(jumps)  # check again whenever ten more jumps are in
                flipped = self.repair_previous_signs(layer, list(jumps.values()))
                if flipped:
                    log.notes.append(f"layer {layer - 1}: signs of neurons {flipped} flipped (the layer "
                                     f"{layer} gradient jumps were not explained with the wiggle's signs)")
                    sigs = {}
                    for key, jump in jumps.items():
                        sig = solve_signature(jump, self.net)
                        if sig is not None and _explained_by_model(sig):
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
                                                                   self.net.hidden(pts), neuron.error)
                cands.append(neuron)
            cands = merge_duplicates(cands)
            chosen = select(cands, n_l, self._sides_hidden, diversity=not last, tol=self.tol_distance())
            done = (len(chosen) == n_l and all(c.complete for c in chosen)
                    and min(len(c.members) for c in chosen) >= self.s.min_support)
            if done:
                return chosen
            n_complete = sum(1 for c in cands if c.complete and len(c.members) >= self.s.min_support)
            if n_complete > best_complete:
                best_complete, stalled = n_complete, 0
            else:
                stalled += 1
            if len(self.lines) >= self.s.max_lines or stalled > self.s.patience:
                missing = n_l - sum(1 for c in chosen if c.complete)
                why = "lines exhausted" if len(self.lines) >= self.s.max_lines else \
                    f"no progress in {self.s.patience} rounds"
                log.notes.append(f"layer {layer}: {missing} of {n_l} neurons not found complete on "
                                 f"{len(self.lines)} lines ({why})")
                full = [c for c in chosen if c.complete]
                # fill up with the best partial rows (weights never seen are zero for now; the
                # precision step may still find them)
                partial = [c for c in sorted(cands, key=lambda c: -len(c.members))
                           if not c.complete and len(c.members) >= self.s.min_support]
                return full + partial[:n_l - len(full)]
            rounds += 1
            targets = [c for c in sorted(cands, key=lambda c: -len(c.members)) if not c.complete]
            targets = targets[:max(n_l - n_complete, 0) + 2]
            made = 0
            for c in targets:
                self.check_time()
                missing = np.nonzero(~c.covered)[0]
                # all missing coordinates at once, then single ones (the neuron's critical surface
                # may not reach the region where all of them are active together)
                subsets = [missing] + [np.array([int(self.rng.choice(missing))]) for _ in range(2)]
                for subset in subsets[:1 if len(missing) == 1 else 3]:
                    line = self.targeted_line(c, subset)
                    if line is not None:
                        sweep_line(self.access, line, min_step=self.min_step())
                        self.lines.append(line)
                        made += 1
            if made == 0 or rounds % 3 == 0:
                self.sweep(2)
            if rounds >= 2 and len([c for c in cands if len(c.members) >= 1]) < n_l:
                # some neuron has never been seen critical: look where few neurons of layer l-1
                # are active (a neuron with a large bias is critical only there)
                for _ in range(2):
                    line = self.exploration_line()
                    if line is not None:
                        sweep_line(self.access, line, min_step=self.min_step())
                        self.lines.append(line)

    def repair_previous_signs(self, layer: int, jumps: list[Jump]) -> list[int]:
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
        width = self.net.width
        previous = None
        for _ in range(width):
            votes = np.zeros(width)
            unexplained = 0
            for jump in jumps:
                sig = solve_signature(jump, self.net)
                if sig is not None and _explained_by_model(sig):
                    continue
                unexplained += 1
                h, _jac, zs, zjacs = self.net.local(jump.x)
                active = h > 0
                q = jump.probes.shape[1]
                for j in np.nonzero(~active & (zs[-1] != 0))[0]:
                    trial = active.copy()
                    trial[j] = True
                    support = np.nonzero(trial)[0]
                    if support.size >= min(q, self.n0):
                        continue  # no degree of freedom left to test the fit
                    js = zjacs[-1][support]
                    test = solve_signature(jump, self.net, support, js)
                    if test is not None and _explained_by_model(test):
                        votes[j] += 1
            if previous is not None and unexplained >= previous:
                self._flip_last(flipped.pop())  # the last flip explained nothing more: undo it
                break
            if unexplained <= 0.05 * len(jumps):
                self._verified[layer - 1] = True  # the next layer's jumps confirm these signs
                break
            votes[flipped] = 0
            j = int(np.argmax(votes))
            if votes[j] < 2:
                break
            self._flip_last(j)
            flipped.append(j)
            previous = unexplained
        return flipped

    def _flip_last(self, j: int) -> None:
        """Flip the sign of neuron ``j`` of the last recovered layer (and the stored copy)."""
        self.net.weights[-1][j] *= -1
        self.net.biases[-1][j] *= -1
        idx = self.net.depth - 1
        if idx < len(self.rows_all):
            self.rows_all[idx][j] *= -1
            self.biases_all[idx][j] *= -1

    def exploration_line(self) -> Line | None:
        """A random line through a region where only a few random neurons of the last recovered
        layer are active (found by a least-norm step on the recovered layers, no query)."""
        if len(self.lines) >= self.s.max_lines or self.net.depth == 0:
            return None
        width = self.net.width
        x = self.rng.normal(size=self.n0) * self.s.scale
        chosen = self.rng.permutation(width)[:int(self.rng.integers(1, max(2, width // 4) + 1))]
        sign = -np.ones(width)
        sign[chosen] = 1.0
        for _ in range(3):
            _, _, zs, zjacs = self.net.local(x)
            g = zjacs[-1]
            norms = np.maximum(np.linalg.norm(g, axis=1), 1e-300)
            target = 0.1 * self.s.scale * norms * sign
            step, *_ = np.linalg.lstsq(g, target - zs[-1], rcond=None)
            x = x + step
        d = self.rng.normal(size=self.n0)
        d /= np.linalg.norm(d)
        half = 0.5 * self.half_length
        return Line(len(self.lines), x, d, -half, half)

    def targeted_line(self, neuron: Neuron, coords: np.ndarray) -> Line | None:
        """A line meant to cross ``neuron`` where the hidden coordinates ``coords`` (neurons of
        layer ``l-1`` never active at its critical points so far) are active, the only place its
        weights on them can be seen: from one of its critical points, step (least norm) to where
        all of them are slightly positive, then run along the known part of the neuron's gradient
        while keeping their pre-activations constant (exactly so when layer ``l-1`` is the first)."""
        if len(self.lines) >= self.s.max_lines or len(coords) == 0:
            return None
        order = self.rng.permutation(len(neuron.members))[:3]
        for key in [neuron.members[i] for i in order]:
            x = self.kink_x(key)
            h, jac, zs, zjacs = self.net.local(x)
            # too many active neurons for the input dimension make a critical point unusable
            # (expansive layers): switch off the weakest active ones to make room
            active = np.nonzero(h > 0)[0]
            excess = len(active) + len(coords) - (self.n0 - 2)
            off = active[np.argsort(zs[-1][active])[:max(excess, 0)]] if excess > 0 else np.zeros(0, int)
            cons = np.concatenate([coords, off]).astype(int)
            z, g = zs[-1][cons], zjacs[-1][cons]
            norms = np.linalg.norm(g, axis=1)
            if np.any(norms == 0) or len(cons) >= self.n0:
                continue
            target = 0.05 * self.s.scale * norms * np.where(np.arange(len(cons)) < len(coords), 1.0, -1.0)
            step, *_ = np.linalg.lstsq(g, target - z, rcond=None)
            x0 = x + step
            gk = (neuron.weights * (h > 0)) @ jac
            gk = gk + 0.3 * np.linalg.norm(gk) * self.rng.normal(size=self.n0) / np.sqrt(self.n0)
            q, _ = np.linalg.qr(g.T)
            d = gk - q @ (q.T @ gk)
            if np.linalg.norm(d) < 1e-9 * max(np.linalg.norm(gk), 1e-300):
                d = self.rng.normal(size=self.n0)
                d -= q @ (q.T @ d)
            norm = np.linalg.norm(d)
            if norm == 0:
                continue
            half = 0.25 * self.half_length
            return Line(len(self.lines), x0, d / norm, -half, half)
        return None

    def _sides_hidden(self, neuron: Neuron, other: Neuron) -> np.ndarray:
        pts = np.stack([self.kink_x(m) for m in neuron.members])
        return self.net.hidden(pts) @ other.weights + other.bias

    # ---- the whole network -----------------------------------------------------------------

    def run(self) -> ExtractionResult:
        """Extract every hidden layer (signatures, precision, signs), then the last layer; stop
        cleanly (and say so) on budget, time or a layer that cannot be completed."""
        sizes = self.sizes
        n_hidden = len(sizes) - 2
        self.logs = [LayerLog(layer=i + 1, neurons=sizes[i + 1]) for i in range(n_hidden)]
        self.rows_all: list[np.ndarray] = []
        self.biases_all: list[np.ndarray] = []
        self.recovered = [np.zeros(n, dtype=bool) for n in sizes[1:-1]]
        self.output: OutputLayer | None = None
        output_log: dict[str, Any] = {}
        self_err = None
        stop = None
        layer = 0
        try:
            t0, q0 = time.perf_counter(), self.access.used
            estimate_noise(self.access, self.rng, self.s.scale)
            self.logs[0].signature_seconds += time.perf_counter() - t0
            self.logs[0].signature_queries += self.access.used - q0
            for layer in range(1, n_hidden + 1):
                rows, biases, results = self.extract_layer(layer)
                signs = np.array([r.sign for r in results], dtype=np.float64)
                if len(rows) < sizes[layer] and (layer < n_hidden or len(rows) == 0):
                    stop = (f"layer {layer}: only {len(rows)} of {sizes[layer]} neurons found; deeper layers "
                            f"not extracted")
                    self._keep(layer, rows, biases, signs, results)
                    break
                if layer < n_hidden:
                    self._keep(layer, rows, biases, signs, results)
                    continue
                t0, q0 = time.perf_counter(), self.access.used
                signs, out, extra = self.output_layer(rows, biases, signs, results)
                output_log = {"seconds": time.perf_counter() - t0, "queries": self.access.used - q0,
                              "residual": out.residual, "rank_deficient": bool(out.rank_deficient),
                              "linear_path_neurons": 0 if extra is None else len(extra[0])}
                self._keep(layer, rows, biases, signs, results, extra)
                self.output = out
                weights, biases_ = self._final_weights()
                q0 = self.access.used
                self_err = self_check(self.access, lambda x, w=weights, b=biases_: _predict(w, b, x), self.rng,
                                      self.n0, self.s.scale)
                output_log["self_check_queries"] = self.access.used - q0
        except (OutOfBudget, OutOfTime) as exc:
            stop = f"stopped while extracting layer {layer}: {exc}" if layer else f"stopped: {exc}"
        unrecovered = [stop] if stop else []
        for log in self.logs:
            unrecovered.extend(log.notes)
        for idx, rec in enumerate(self.recovered):
            n = sizes[idx + 1]
            if idx >= len(self.rows_all):
                unrecovered.append(f"layer {idx + 1}: not extracted (all {n} neurons missing)")
            elif not rec.all():
                unrecovered.append(f"layer {idx + 1}: {int((~rec).sum())} of {n} neurons not recovered "
                                   f"(indices {np.nonzero(~rec)[0].tolist()} of the extracted layer)")
            results = getattr(self, "_results", {}).get(idx + 1, [])
            hard = [i for i, r in enumerate(results) if r.confidence < self.s.easy_confidence]
            if hard and not self._verified.get(idx + 1, False):
                unrecovered.append(f"layer {idx + 1}: signs of neurons {hard} uncertain (wiggle majority below "
                                   f"{self.s.easy_confidence:g})")
        if self.output is None:
            unrecovered.append("output layer: not solved (hidden layers incomplete); its weights are zeros")
        if self_err is not None and self_err >= 1e-6:
            unrecovered.append(f"self-check: the reconstruction differs from the oracle by up to {self_err:.3g} "
                               f"(relative) on fresh queries, so some recovered rows or signs are wrong "
                               f"(output noise floor {self.access.noise:.2g})")
        weights, biases = self._final_weights()
        complete = stop is None and all(r.all() for r in self.recovered) and self_err is not None and self_err < 1e-6
        return ExtractionResult(sizes, weights, biases, self.recovered, self.logs, output_log,
                                _dedupe(unrecovered), complete, self.access.noise, self_err,
                                time.perf_counter() - self.start, self.access.used)

    def extract_layer(self, layer: int):
        """Signatures (critical points, grouping, fakes out), precision improvement, then signs by
        neuron wiggle, each timed and counted. Returns (rows, biases, sign results)."""
        log = self.logs[layer - 1]
        last = layer == len(self.sizes) - 2
        t0, q0, lines0 = time.perf_counter(), self.access.used, len(self.lines)
        try:
            neurons = self.first_layer(log) if layer == 1 else self.hidden_layer(layer, log)
        finally:
            log.signature_seconds += time.perf_counter() - t0
            log.signature_queries += self.access.used - q0
            log.lines += len(self.lines) - lines0
        log.found = sum(1 for n in neurons if n.complete)
        covered = [np.ones(self.sizes[layer - 1], bool) if n.covered is None else n.covered.copy() for n in neurons]
        self._row_errors = [n.error for n in neurons]
        width = self.sizes[layer - 1]
        anchors = [np.stack([self.kink_x(m) for m in n.members]) if n.members else None for n in neurons]
        self._anchors = anchors
        rows = np.stack([n.weights for n in neurons]) if neurons else np.zeros((0, width))
        biases = np.array([n.bias for n in neurons], dtype=np.float64)
        t1, q1 = time.perf_counter(), self.access.used
        try:
            rows, biases = self.improve_precision(rows, biases, log, anchors, covered)
        finally:
            log.precision_seconds += time.perf_counter() - t1
            log.precision_queries += self.access.used - q1
            log.signature_seconds += time.perf_counter() - t1
            log.signature_queries += self.access.used - q1
        t0, q0 = time.perf_counter(), self.access.used
        hard_samples = self.s.sign_samples if last and self._solve_checks_signs(rows) else self.s.hard_samples
        try:
            results = recover_signs(self.access, self.net, rows, biases, self.rng, self.s.scale, self.s.sign_samples,
                                    hard_samples, self.s.easy_confidence, self.s.wiggle,
                                    anchors=anchors) if len(rows) else []
        finally:
            log.sign_seconds += time.perf_counter() - t0
            log.sign_queries += self.access.used - q0
        log.hard_neurons = sum(r.hard for r in results)
        log.min_sign_confidence = min((r.confidence for r in results), default=None)
        self._results = getattr(self, "_results", {})
        self._results[layer] = results
        return rows, biases, results

    def improve_precision(self, rows: np.ndarray, biases: np.ndarray, log: LayerLog, anchors=None,
                          covered=None):
        """Carlini et al.'s precision improvement, row by row (``precision.refine_layer_row``).
        A row with coordinates never seen (``covered``) is refitted with a looser shift limit,
        which can find the missing weights; ``covered`` is updated in place."""
        rows, biases = rows.copy(), biases.copy()
        for k in range(len(rows)):
            cov = None if covered is None else covered[k]
            partial = cov is not None and not cov.all()
            wanted = self.s.refine == "all" or (self.s.refine == "auto" and
                                                 self._row_errors[k] > self.s.refine_above)
            if not wanted and not partial:
                continue
            self.check_time()
            out = None
            for _attempt in range(3 if partial else 2):  # redraw points when a fit is not clean
                got = refine_layer_row(self.access, self.net, rows, biases, k, self.rng, self.s.scale,
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
            self._partial = getattr(self, "_partial", {})
            self._partial[log.layer] = [not c.all() for c in covered]
        return rows, biases

    def _solve_checks_signs(self, rows: np.ndarray) -> bool:
        """The output solve can name wrong last-hidden-layer signs when the rows are independent."""
        return len(rows) > 0 and len(rows) <= rows.shape[1] and np.linalg.matrix_rank(rows) == len(rows)

    def _keep(self, layer: int, rows, biases, signs, results, extra=None) -> None:
        n = self.sizes[layer]
        rows = rows * signs[:, None] if len(rows) else np.zeros((0, self.sizes[layer - 1]))
        biases = biases * signs if len(rows) else np.zeros(0)
        if extra is not None and len(extra[0]):
            rows = np.concatenate([rows, extra[0]])
            biases = np.concatenate([biases, extra[1]])
        self.rows_all.append(_pad(rows, n) if len(rows) else np.zeros((n, self.sizes[layer - 1])))
        self.biases_all.append(_pad(biases, n) if len(rows) else np.zeros(n))
        fixed = self._fixed.get(layer, np.zeros(len(results), dtype=bool))
        partial = getattr(self, "_partial", {}).get(layer, [False] * len(results))
        self.recovered[layer - 1][:len(results)] = [(r.votes > 0 or bool(f)) and not p
                                                     for r, f, p in zip(results, fixed, partial)]
        if len(rows) == n:
            self.net.add_layer(rows, biases)

    @property
    def _verified(self) -> dict[int, bool]:
        """Layers whose signs the output solve has checked (all of them, exactly)."""
        if not hasattr(self, "_verified_layers"):
            self._verified_layers: dict[int, bool] = {}
        return self._verified_layers

    @property
    def _fixed(self) -> dict[int, np.ndarray]:
        if not hasattr(self, "_fixed_masks"):
            self._fixed_masks: dict[int, np.ndarray] = {}
        return self._fixed_masks

    def output_layer(self, rows, biases, signs, results):
        """Solve the last layer linearly (Carlini et al.) on random queries. The same queries
        settle the last hidden layer's signs (``wrong_signs_from_solve``): wrong ones are flipped;
        if the solve cannot tell (dependent rows), hard neurons get more wiggle votes instead."""
        layer = len(self.sizes) - 2
        log = self.logs[-1]
        n_last, n_prev = len(rows), self.net.width
        count = 2 * (n_last + n_prev + 1) + 16
        x = np.concatenate([sample_inputs(self.rng, count, self.n0, self.s.scale),
                            self._straddle(rows, biases)])
        f = self.access.full(x, use_reserve=True)
        complete = n_last == self.sizes[-2] and not any(getattr(self, "_partial", {}).get(layer, []))
        wrong = wrong_signs_from_solve(self.net, rows, biases, signs, x, f) if complete else None
        self._verified[layer] = wrong is not None
        if wrong is None:
            hard = [k for k, r in enumerate(results) if r.confidence < self.s.easy_confidence]
            if hard:
                t0, q0 = time.perf_counter(), self.access.used
                more = recover_signs(self.access, self.net, rows, biases, self.rng, self.s.scale,
                                     self.s.hard_samples, self.s.hard_samples, self.s.easy_confidence,
                                     self.s.wiggle, neurons=hard, anchors=self._anchors)
                for k in hard:
                    results[k] = more[k]
                    results[k].hard = True
                log.sign_seconds += time.perf_counter() - t0
                log.sign_queries += self.access.used - q0
                signs = np.array([r.sign for r in results], dtype=np.float64)
            wrong = np.zeros(n_last, dtype=bool)
        log.signs_fixed_by_output_solve = int(wrong.sum())
        self._fixed[layer] = wrong.copy()
        signs = np.where(wrong, -signs, signs)
        hprev = self.net.hidden(x)
        hidden = np.maximum((hprev @ rows.T + biases) * signs, 0.0)
        n_full = self.sizes[-2]
        if n_last == n_full:
            return signs, solve_output_layer(hidden, f), None
        return (signs, *self._linear_path(hidden, hprev, f, n_full - n_last))

    def _linear_path(self, hidden: np.ndarray, hprev: np.ndarray, f: np.ndarray, slots: int):
        """Last hidden layer incomplete (a neuron never seen critical, e.g. one whose large bias
        keeps it active everywhere we looked): solve the output on ``[found neurons, h_{L-2}, 1]``;
        the ``h_{L-2}`` part is what the missing neurons add while active, an affine map. It is
        put in the free slots as always-active neurons (rank-r SVD, bias lifted above the
        smallest value seen): the function is reproduced where they were active, their weights
        are not the victim's (not identifiable from a neuron that never switches)."""
        n_last = hidden.shape[1]
        out = solve_output_layer(np.concatenate([hidden, hprev], axis=1), f)
        v, u = out.weights[:, :n_last], out.weights[:, n_last:]  # (m, n_last), (m, n_prev)
        left, sv, right = np.linalg.svd(u.T, full_matrices=False)  # u.T = left @ diag(sv) @ right
        keep = [i for i in range(min(slots, len(sv))) if sv[i] > 1e-12 * max(sv[0], 1e-300)]
        rows_x, biases_x, cols = [], [], []
        bias = out.bias.copy()
        for i in keep:
            r = left[:, i]
            vals = hprev @ r
            beta = -float(vals.min()) + self.s.scale * (1.0 + float(np.abs(vals).max()))
            rows_x.append(r)
            biases_x.append(beta)
            cols.append(sv[i] * right[i])
            bias -= beta * sv[i] * right[i]
        weights = np.concatenate([v] + [c[:, None] for c in cols], axis=1) if cols else v
        extra = (np.array(rows_x).reshape(-1, hprev.shape[1]), np.array(biases_x))
        self.logs[-1].notes.append(f"layer {len(self.sizes) - 2}: {slots} neuron(s) never seen critical; their "
                                   f"effect where active is kept as {len(keep)} always-active linear neuron(s)")
        return OutputLayer(weights, bias, out.residual, out.rank_deficient), extra

    def _straddle(self, rows: np.ndarray, biases: np.ndarray) -> np.ndarray:
        """Two inputs per neuron, one on each side of its hyperplane (computed on the recovered
        layers, no query), so that every neuron switches within the output solve's queries."""
        pts = []
        for k in range(len(rows)):
            x = point_on_neuron(self.net, rows, biases, k, self.rng, self.s.scale)
            if x is None:
                continue
            _, _, _, grads, _, _ = layer_values(self.net, rows, biases, x)
            u = grads[k] / max(np.linalg.norm(grads[k]), 1e-300)
            r = 0.05 * self.s.scale
            pts.extend([x + r * u, x - r * u])
        return np.array(pts).reshape(-1, self.n0)

    def _final_weights(self):
        """A full weight set of the victim's shape: what is not recovered is zeros."""
        sizes = self.sizes
        weights, biases = [], []
        for i in range(len(sizes) - 1):
            if i < len(self.rows_all):
                weights.append(_pad_cols(self.rows_all[i], sizes[i]))
                biases.append(np.asarray(self.biases_all[i], dtype=np.float64))
            elif i == len(sizes) - 2 and self.output is not None:
                weights.append(_pad_cols(self.output.weights, sizes[i]))
                biases.append(self.output.bias)
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


def _explained_by_model(sig: Signature) -> bool:
    """Does the recovered model explain this jump (small residual on the extra probes)?"""
    return not (np.isfinite(sig.residual) and sig.residual > max(1e3 * sig.error, 1e-6))


def join_groups(groups: list[list[int]], sigs: list[Signature], width: int, tol: float = 1e-6) -> list[list[int]]:
    """Groups of partial signatures that turn out to be one neuron (their unified rows agree on
    the coordinates both cover, plus the bias) are joined: two partial views of one row may
    overlap too little pairwise and still be the same neuron (Carlini et al., unifying partial
    solutions)."""
    merged = [merge_signatures([sigs[i] for i in g], width) for g in groups]
    uf = UnionFind(len(groups))
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            common = merged[i][2] & merged[j][2]
            if common.sum() < 3:
                continue
            va = np.append(merged[i][0][common], merged[i][1])
            vb = np.append(merged[j][0][common], merged[j][1])
            na, nb = np.linalg.norm(va), np.linalg.norm(vb)
            if na < 0.1 or nb < 0.1:
                continue
            va, vb = va / na, vb / nb
            if min(np.linalg.norm(va - vb), np.linalg.norm(va + vb)) < tol:
                uf.union(i, j)
    out: dict[int, list[int]] = {}
    for gi, g in enumerate(groups):
        out.setdefault(uf.find(gi), []).extend(g)
    return sorted(out.values(), key=len, reverse=True)


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
