"""Critical-point search along random lines, with precision refinement.

Carlini, Jagielski and Mironov (CRYPTO 2020), the critical-point search of their differential
attack (the "2-linear test" they take from Jagielski et al., USENIX Security 2020): along a line
``x(t) = x0 + t d`` the network is piecewise linear in ``t``; a *critical point* is where one
neuron's pre-activation crosses zero, i.e. where the slope of ``g(t) = f(x(t))`` jumps. On an
interval ``[a, b]`` with one-sided slopes ``s_a`` (right of a) and ``s_b`` (left of b), the two
lines ``g(a) + s_a (t - a)`` and ``g(b) + s_b (t - b)`` meet at

    t* = a + (g(b) - g(a) - s_b (b - a)) / (s_a - s_b)                              (intersection)

If ``g(t*)`` lies on both lines, ``[a, b]`` holds exactly one critical point, at ``t*``; if the
slopes agree and ``g(b) = g(a) + s_a (b - a)``, none; otherwise the interval is split (binary
search). Precision refinement (Carlini et al., "improving the precision" of critical points,
their answer to float64 round-off): once the interval
is known to hold one critical point, both pieces are re-measured with steps as long as the
pieces themselves, so the slopes, and ``t*``, are exact to a few ulps instead of to the
finite-difference error of the short steps used while searching.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attacks.cryptanalytic._access import Access

STEP = 2.0 ** -10  # slope step as a fraction of the interval width while searching


@dataclass
class Kink:
    """One critical point on a line: position ``t``, refined one-sided slopes, value, gap."""

    line: int
    t: float
    slope_left: float
    slope_right: float
    value: float
    gap: float = float("inf")  # distance (in t) to the nearest other critical point or line end

    @property
    def jump(self) -> float:
        return self.slope_right - self.slope_left


@dataclass
class Line:
    """A swept line ``x0 + t d`` (``|d| = 1``), ``t`` in ``[lo, hi]``, with its critical points."""

    index: int
    x0: np.ndarray
    d: np.ndarray
    lo: float
    hi: float
    kinks: list[Kink] = field(default_factory=list)
    unresolved: list[tuple[float, float]] = field(default_factory=list)
    queries: int = 0

    def point(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return self.x0 + t[..., None] * self.d if t.ndim else self.x0 + float(t) * self.d


def random_line(index: int, n0: int, rng: np.random.Generator, scale: float, half_length: float) -> Line:
    """A line through a Gaussian point ``x0 ~ N(0, scale^2 I)`` in a uniformly random direction."""
    x0 = rng.normal(size=n0) * scale
    d = rng.normal(size=n0)
    d /= np.linalg.norm(d)
    return Line(index, x0, d, -half_length, half_length)


def intersect(a: float, ga: float, sa: float, b: float, gb: float, sb: float) -> float:
    """Where the line through ``(a, g(a))`` with slope ``sa`` meets the line through ``(b, g(b))``
    with slope ``sb`` (the intersection equation above)."""
    return a + (gb - ga - sb * (b - a)) / (sa - sb)


def sweep_line(access: Access, line: Line, max_queries: int = 20_000, min_step: float = 0.0) -> Line:
    """Find every critical point on ``line`` (Carlini et al. 2020, critical-point search: binary
    search on the slopes of ``g(t) = f(x0 + t d)`` with the intersection test above).

    Each open interval carries its end values and one-sided end slopes together with the step each
    slope was measured with; a slope measured with a step longer than 1/256 of the interval is
    measured again with a shorter one, so a critical point close to an end cannot spoil the
    search forever. ``min_step`` is the shortest step whose slope is still above the noise; an
    interval too short for it is recorded as unresolved (never an endless loop), as is everything
    left when ``max_queries`` is spent on this line."""
    start = access.used
    g = lambda ts: access.scalar(line.point(np.asarray(ts, dtype=np.float64)))  # noqa: E731
    lo, hi = line.lo, line.hi
    h = max((hi - lo) * STEP, min_step)
    v = g([lo, lo + h, hi - h, hi])
    stack = [(lo, v[0], (v[1] - v[0]) / h, h, hi, v[3], (v[3] - v[2]) / h, h)]
    kinks: list[Kink] = []
    while stack:
        if access.used - start > max_queries:
            line.unresolved.extend((s[0], s[4]) for s in stack)
            break
        a, ga, sa, ha, b, gb, sb, hb = stack.pop()
        w = b - a
        hn = max(w * STEP, min_step)
        if hn > w / 8 or w <= 4 * np.spacing(max(abs(a), abs(b))) * 1024:
            line.unresolved.append((a, b))
            continue
        # shorten slope steps that are long for this interval
        redo = [p for p, hh in ((a + hn, ha), (b - hn, hb)) if hh > 256 * hn]
        if redo:
            vals = g(redo)
            i = 0
            if ha > 256 * hn:
                sa, ha, i = (vals[0] - ga) / hn, hn, 1
            if hb > 256 * hn:
                sb, hb = (gb - vals[i]) / hn, hn
        noise = access.value_noise([ga, gb])
        ea, eb = 4 * noise / ha, 4 * noise / hb
        if abs(sa - sb) <= ea + eb and abs(gb - ga - sa * w) <= 8 * noise + (ea + eb) * w:
            continue  # linear: no critical point
        kink = _single_kink(g, access, line.index, a, ga, sa, ha, ea, b, gb, sb, hb, eb)
        if kink is not None:
            kinks.append(kink)
            continue
        m = 0.5 * (a + b)
        hm = max(0.5 * w * STEP, min_step)
        vm = g([m - hm, m, m + hm])
        stack.append((a, ga, sa, ha, m, vm[1], (vm[1] - vm[0]) / hm, hm))
        stack.append((m, vm[1], (vm[2] - vm[1]) / hm, hm, b, gb, sb, hb))
    line.kinks = sorted(kinks, key=lambda k: k.t)
    _set_gaps(line)
    line.queries += access.used - start
    return line


def _single_kink(g, access: Access, index: int, a, ga, sa, ha, ea, b, gb, sb, hb, eb) -> Kink | None:
    """Test whether ``[a, b]`` holds exactly one critical point and, if so, locate it precisely.

    The two end lines meet at ``t*`` (intersection equation above). That ``g(t*)`` lies on both
    lines is not enough: it always does when ``t*`` falls in the first or last linear piece. So,
    as Carlini et al. do, the lines are checked right next to ``t*`` too: ``g`` is queried at
    ``t* - eta``, ``t*`` and ``t* + eta``, and the chords from each end to these points must
    have the end slopes (no other critical point in ``[a, t* - eta]`` or ``[t* + eta, b]``).
    These long chords are also the precision refinement (``refine_kink``)."""
    if abs(sa - sb) <= ea + eb:
        return None
    ts = intersect(a, ga, sa, b, gb, sb)
    if not (a + ha < ts < b - hb):
        return None
    err_t = (ea + eb) * (b - a) / abs(sa - sb)  # how far t* can be from the true critical point
    eta_l = max((ts - a) * 2.0 ** -8, 16 * err_t)
    eta_r = max((b - ts) * 2.0 ** -8, 16 * err_t)
    if ts - eta_l <= a or ts + eta_r >= b:
        return None
    gl, gs, gr = g([ts - eta_l, ts, ts + eta_r])
    return refine_kink(access, index, a, ga, sa, ea, b, gb, sb, eb, ts, eta_l, eta_r, gl, gs, gr)


def refine_kink(access: Access, index: int, a, ga, sa, ea, b, gb, sb, eb, ts, eta_l, eta_r, gl, gs, gr
                ) -> Kink | None:
    """Precision refinement of one critical point (Carlini et al. 2020, improving precision).

    The slope of each linear piece is measured again over (almost) the whole piece, from the far
    end ``a`` (resp. ``b``) to ``t* - eta`` (resp. ``t* + eta``), so its error is ``noise/piece``
    instead of ``noise/step``; the exact lines are intersected again (intersection equation).
    The long chords must agree with the short-step end slopes (else another critical point lies
    inside a piece), and ``g(t*)`` must lie on the refined piecewise-linear model."""
    tl, tr = ts - eta_l, ts + eta_r
    sl = (gl - ga) / (tl - a)
    sr = (gb - gr) / (b - tr)
    noise = access.value_noise([ga, gb, gl, gr, gs])
    el, er = 4 * noise / (tl - a), 4 * noise / (b - tr)
    if abs(sl - sa) > 2 * (ea + el) or abs(sr - sb) > 2 * (eb + er) or abs(sl - sr) <= 2 * (el + er):
        return None
    t = intersect(a, ga, sl, b, gb, sr)
    if not (tl < t < tr):
        return None
    pred = ga + sl * (ts - a) if ts <= t else gb - sr * (b - ts)
    if abs(gs - pred) > 8 * noise + (el + er) * (b - a):
        return None
    return Kink(index, float(t), float(sl), float(sr), float(ga + sl * (t - a)))


def _set_gaps(line: Line) -> None:
    """Distance from each critical point to its nearest neighbour, line end or unresolved part."""
    marks = [line.lo, line.hi] + [k.t for k in line.kinks]
    for a, b in line.unresolved:
        marks.extend((a, b))
    marks = np.sort(np.asarray(marks))
    for k in line.kinks:
        others = marks[np.abs(marks - k.t) > 0]
        k.gap = float(np.min(np.abs(others - k.t))) if others.size else float("inf")
