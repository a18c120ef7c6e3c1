"""Loss-spike analysis: onsets, inter-spike intervals, periodicity, and D_eff step changes.

Spike onsets come from :func:`tnattn.metrics.detect_loss_spikes` (its documented, causal criterion
on log10 of the loss; the trainer's ``spike`` column uses the same function). Onsets closer than
``merge`` epochs are merged into one *event* (a spike often rings for a few epochs and is flagged
twice), and the analyses below work on events.

Periodicity. Two statistics of the event times ``t_1 < ... < t_n``:

- the coefficient of variation of the intervals, ``CV = std(dt) / mean(dt)``: 0 for a strictly
  periodic train, about 1 for a Poisson train;
- the peak of the spike-train periodogram ``P(f) = |sum_k exp(2 pi i f t_k)|^2 / n`` over
  frequencies ``f`` between ``2 / span`` and ``1 / (2 merge)`` (a Rayleigh power: about 1 at any
  fixed ``f`` for random times, up to ``n`` for a train with period ``1/f``).

Null model: the first and last events stay where they are and the ``n - 2`` others are placed
uniformly at random between them, subject to the same minimum separation ``merge``. The p-values
are Monte Carlo fractions of null trains at least as regular (CV at most, peak at least the
observed). With few events the test has little power; the functions report ``n`` so that the
reader can judge.

D_eff steps (:func:`deff_steps`): a step at measurement ``t`` means the median of the next
``window`` values differs from the median of the previous ``window`` values by more than
``max(threshold * s, min_jump)``, ``s`` the pooled robust spread (1.4826 MAD around each window's
median); among consecutive candidates the largest difference is the step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from tnattn.metrics import detect_loss_spikes

__all__ = [
    "spike_events",
    "inter_spike_intervals",
    "spike_spectrum",
    "PeriodicityResult",
    "periodicity_test",
    "pooled_periodicity_test",
    "DeffSteps",
    "deff_steps",
    "align_spikes_with_steps",
    "deff_jumps_at",
    "deff_drift_between_spikes",
    "analyse_history",
]


def _onsets(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size and (not np.all(np.isfinite(a)) or np.any(np.diff(a) < 0)):
        raise ValueError(f"{name} must be finite and non-decreasing")
    return a


def spike_events(loss: Any, *, merge: int = 5, epochs: Any = None, **detect_kwargs) -> np.ndarray:
    """Loss-spike events: onsets of :func:`~tnattn.metrics.detect_loss_spikes`, merged.

    Parameters
    ----------
    loss : array-like, shape (T,)
        Loss per epoch.
    merge : int
        Onsets less than ``merge`` epochs after the previous event belong to it (0 = no merging).
    epochs : array-like, shape (T,), optional
        Epoch of each entry (default ``1..T``, the trainer's 1-based epochs).
    **detect_kwargs
        Passed to ``detect_loss_spikes`` (window, threshold, min_rise, log, floor).

    Returns
    -------
    ndarray of int, shape (S,)
        Epochs of the events, increasing.
    """
    if merge < 0:
        raise ValueError(f"merge must be >= 0, got {merge}")
    loss = np.asarray(loss, dtype=np.float64)
    idx = detect_loss_spikes(loss, **detect_kwargs)
    ep = np.arange(1, loss.shape[0] + 1) if epochs is None else np.asarray(epochs)
    if ep.shape != loss.shape:
        raise ValueError(f"epochs must have the shape of loss {loss.shape}, got {ep.shape}")
    return _merge(ep[idx].astype(np.int64), merge)


def _merge(t: np.ndarray, merge: int) -> np.ndarray:
    out: list[int] = []
    for v in t:
        if not out or v - out[-1] >= merge:
            out.append(int(v))
    return np.asarray(out, dtype=np.int64)


def inter_spike_intervals(events: Any) -> np.ndarray:
    """Differences between consecutive event times, shape (S - 1,)."""
    return np.diff(_onsets(events, "events"))


def _cv(dt: np.ndarray) -> float:
    return float(np.std(dt) / np.mean(dt)) if dt.size >= 2 and np.mean(dt) > 0 else float("nan")


def _freq_grid(span: float, merge: int, oversample: int = 4) -> np.ndarray:
    f_max = 0.5 / max(merge, 1)
    f_min = 2.0 / span
    if f_min >= f_max:
        return np.zeros(0)
    return np.arange(f_min, f_max, 1.0 / (oversample * span))


def spike_spectrum(events: Any, freqs: Any) -> np.ndarray:
    """Rayleigh periodogram ``P(f) = |sum_k exp(2 pi i f t_k)|^2 / n`` of an event train.

    Parameters
    ----------
    events : array-like, shape (S,)
        Event times.
    freqs : array-like, shape (F,)
        Frequencies (cycles per epoch).

    Returns
    -------
    ndarray, shape (F,)
    """
    t = _onsets(events, "events")
    f = np.asarray(freqs, dtype=np.float64)
    if t.size == 0:
        return np.zeros_like(f)
    phase = 2.0 * np.pi * np.outer(f, t)
    return (np.cos(phase).sum(1) ** 2 + np.sin(phase).sum(1) ** 2) / t.size


def _null_train(first: float, last: float, n: int, merge: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` event times with fixed ends and uniform interior, at least ``merge`` apart.

    Minimum separation by the standard trick: draw the interior on a span shortened by
    ``(n - 1) merge``, sort, and add ``k merge`` to the k-th time.
    """
    slack = (last - first) - (n - 1) * merge
    if slack < 0:
        slack = 0.0
    inner = np.sort(rng.uniform(0.0, slack, n - 2))
    return np.concatenate([[first], first + inner + merge * np.arange(1, n - 1), [last]])


@dataclass
class PeriodicityResult:
    """Outcome of :func:`periodicity_test`.

    Attributes
    ----------
    n_events : int
    intervals : ndarray
    mean_interval, cv : float
    cv_p_value : float
        Fraction of null trains with CV <= observed (small = more regular than chance).
    period : float
        ``1 / f`` at the periodogram peak.
    peak_power : float
    peak_p_value : float
        Fraction of null trains whose periodogram peak >= observed.
    freqs, power : ndarray
        The periodogram.
    """

    n_events: int
    intervals: np.ndarray
    mean_interval: float
    cv: float
    cv_p_value: float
    period: float
    peak_power: float
    peak_p_value: float
    freqs: np.ndarray = field(repr=False)
    power: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("n_events", "intervals", "mean_interval", "cv", "cv_p_value",
                                                "period", "peak_power", "peak_p_value")}


def periodicity_test(events: Any, *, merge: int = 5, n_null: int = 2000, seed: int = 0) -> PeriodicityResult:
    """Is an event train more regular than random times? (see the module docstring)

    Parameters
    ----------
    events : array-like, shape (S,)
        Event times (e.g. from :func:`spike_events`).
    merge : int
        Minimum separation of the events (kept by the null model; also sets the highest frequency).
    n_null : int
        Monte Carlo null trains.
    seed : int
        Seed of the null trains.

    Returns
    -------
    PeriodicityResult
        With fewer than 4 events the statistics are ``nan`` (three intervals are the minimum for
        a CV with any meaning).
    """
    t = _onsets(events, "events")
    n = int(t.size)
    dt = np.diff(t)
    nan = float("nan")
    if n < 4 or t[-1] <= t[0]:
        return PeriodicityResult(n, dt, float(dt.mean()) if dt.size else nan, nan, nan, nan, nan, nan, np.zeros(0), np.zeros(0))
    span = float(t[-1] - t[0])
    freqs = _freq_grid(span, merge)
    power = spike_spectrum(t, freqs)
    cv = _cv(dt)
    peak = float(power.max()) if power.size else nan
    period = float(1.0 / freqs[int(np.argmax(power))]) if power.size else nan
    rng = np.random.default_rng(seed)
    null_cv = np.empty(n_null)
    null_peak = np.empty(n_null)
    for j in range(n_null):
        s = _null_train(t[0], t[-1], n, merge, rng)
        null_cv[j] = _cv(np.diff(s))
        null_peak[j] = spike_spectrum(s, freqs).max() if freqs.size else nan
    return PeriodicityResult(
        n_events=n,
        intervals=dt,
        mean_interval=float(dt.mean()),
        cv=cv,
        cv_p_value=float((1 + np.sum(null_cv <= cv)) / (1 + n_null)),
        period=period,
        peak_power=peak,
        peak_p_value=float((1 + np.sum(null_peak >= peak)) / (1 + n_null)) if freqs.size else nan,
        freqs=freqs,
        power=power,
    )


def pooled_periodicity_test(trains: Sequence[Any], *, merge: int = 5, n_null: int = 2000, seed: int = 0) -> dict:
    """Ensemble version of the CV test: mean CV over the trains with >= 4 events.

    Each null replicate redraws every train under the null model of :func:`periodicity_test`, so
    the p-value is for the ensemble as a whole (it has power where single runs have few spikes).

    Returns
    -------
    dict
        ``n_trains`` (used), ``n_events`` (total), ``mean_cv``, ``null_mean_cv`` (mean over the null
        replicates), ``p_value`` (fraction of null replicates with mean CV <= observed), and the
        pooled ``intervals``.
    """
    used = [_onsets(t, "trains") for t in trains]
    used = [t for t in used if t.size >= 4 and t[-1] > t[0]]
    if not used:
        return {"n_trains": 0, "n_events": 0, "mean_cv": float("nan"), "null_mean_cv": float("nan"),
                "p_value": float("nan"), "intervals": []}
    obs = float(np.mean([_cv(np.diff(t)) for t in used]))
    rng = np.random.default_rng(seed)
    null = np.empty(n_null)
    for j in range(n_null):
        null[j] = np.mean([_cv(np.diff(_null_train(t[0], t[-1], t.size, merge, rng))) for t in used])
    return {
        "n_trains": len(used),
        "n_events": int(sum(t.size for t in used)),
        "mean_cv": obs,
        "null_mean_cv": float(null.mean()),
        "p_value": float((1 + np.sum(null <= obs)) / (1 + n_null)),
        "intervals": np.concatenate([np.diff(t) for t in used]),
    }


@dataclass
class DeffSteps:
    """Step changes of D_eff found by :func:`deff_steps`.

    Attributes
    ----------
    epochs : ndarray of int, shape (K,)
        First epoch after each step.
    sizes : ndarray, shape (K,)
        Median after minus median before (signed).
    """

    epochs: np.ndarray
    sizes: np.ndarray


def deff_steps(epochs: Any, deff: Any, *, window: int = 10, threshold: float = 4.0, min_jump: float = 0.05) -> DeffSteps:
    """Persistent step changes of a D_eff trace (criterion in the module docstring).

    Parameters
    ----------
    epochs, deff : array-like, shape (T,)
        Measurement epochs and values; non-finite values (epochs without a measurement) are dropped.
    window : int
        Measurements on each side (>= 2).
    threshold : float
        Multiple of the pooled robust spread a step must exceed.
    min_jump : float
        Smallest step size counted.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    ep = np.asarray(epochs, dtype=np.float64)
    v = np.asarray(deff, dtype=np.float64)
    if ep.shape != v.shape or ep.ndim != 1:
        raise ValueError("epochs and deff must be 1-D arrays of the same shape")
    keep = np.isfinite(v)
    ep, v = ep[keep], v[keep]
    T = v.size
    if T < 2 * window:
        return DeffSteps(np.zeros(0, dtype=np.int64), np.zeros(0))
    win = np.lib.stride_tricks.sliding_window_view(v, window)  # row j: v[j : j+window]
    med = np.median(win, axis=1)
    mad = np.median(np.abs(win - med[:, None]), axis=1)
    # Step at measurement t (window <= t <= T - window): before = row t-window, after = row t.
    t = np.arange(window, T - window + 1)
    before, after = t - window, t
    delta = med[after] - med[before]
    spread = 1.4826 * 0.5 * (mad[after] + mad[before])
    cand = np.abs(delta) > np.maximum(threshold * spread, min_jump)
    steps, sizes = [], []
    j = 0
    while j < t.size:
        if not cand[j]:
            j += 1
            continue
        k = j
        while k + 1 < t.size and cand[k + 1] and np.sign(delta[k + 1]) == np.sign(delta[j]):
            k += 1
        best = j + int(np.argmax(np.abs(delta[j : k + 1])))
        steps.append(int(ep[t[best]]))
        sizes.append(float(delta[best]))
        j = k + 1
    return DeffSteps(np.asarray(steps, dtype=np.int64), np.asarray(sizes))


def align_spikes_with_steps(spikes: Any, steps: Any, *, tolerance: int = 10, span: Optional[tuple] = None) -> dict:
    """How many spikes have a D_eff step within ``tolerance`` epochs, against chance.

    Parameters
    ----------
    spikes, steps : array-like of int
        Spike event epochs and D_eff step epochs.
    tolerance : int
        A spike is *matched* if a step lies within ``[spike - tolerance, spike + tolerance]``.
    span : (first, last), optional
        Epoch range of the run (default: the range covered by spikes and steps). The chance level
        is the fraction of this range lying within ``tolerance`` of some step: the probability
        that a spike placed uniformly at random would be matched.

    Returns
    -------
    dict
        ``n_spikes``, ``n_steps``, ``matched`` (count), ``fraction``, ``chance``, ``offsets``
        (nearest step minus spike, for every spike with a step).
    """
    s = _onsets(spikes, "spikes")
    q = _onsets(steps, "steps")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    offsets = []
    matched = 0
    for v in s:
        if q.size == 0:
            break
        k = int(np.argmin(np.abs(q - v)))
        offsets.append(float(q[k] - v))
        matched += abs(q[k] - v) <= tolerance
    if span is None:
        both = np.concatenate([s, q])
        span = (float(both.min()), float(both.max())) if both.size else (0.0, 0.0)
    lo, hi = span
    grid = np.arange(int(lo), int(hi) + 1)
    if q.size and grid.size:
        covered = (np.abs(grid[:, None] - q[None, :]) <= tolerance).any(axis=1).mean()
    else:
        covered = 0.0
    return {
        "n_spikes": int(s.size),
        "n_steps": int(q.size),
        "matched": int(matched),
        "fraction": float(matched / s.size) if s.size else float("nan"),
        "chance": float(covered),
        "offsets": offsets,
    }


def deff_jumps_at(epochs: Any, deff: Any, at: Any, *, window: int = 10) -> np.ndarray:
    """Median D_eff over the ``window`` measurements from ``at`` minus over the ``window`` before.

    Returns nan where either side has fewer than 2 measurements. Shape (len(at),).
    """
    ep = np.asarray(epochs, dtype=np.float64)
    v = np.asarray(deff, dtype=np.float64)
    keep = np.isfinite(v)
    ep, v = ep[keep], v[keep]
    out = []
    for a in np.asarray(at, dtype=np.float64).ravel():
        i = int(np.searchsorted(ep, a))
        pre, post = v[max(0, i - window) : i], v[i : i + window]
        out.append(float(np.median(post) - np.median(pre)) if pre.size >= 2 and post.size >= 2 else float("nan"))
    return np.asarray(out)


def deff_drift_between_spikes(epochs: Any, deff: Any, events: Any, *, skip: int = 10, min_gap: int = 40,
                              frac: float = 0.2) -> np.ndarray:
    """How D_eff drifts between consecutive spikes: late minus early median of each interval.

    For consecutive events ``a < b`` at least ``min_gap`` epochs apart, the measurements with
    ``a + skip <= epoch < b - 1`` (the spike's own aftermath and the next spike's onset left out)
    are split into the first and last ``frac`` of them; the value is the median of the last part
    minus the median of the first. Negative values: D_eff falls between spikes.

    Returns
    -------
    ndarray, shape (I,)
        One value per interval used (intervals with fewer than 5 measurements are skipped).
    """
    if not 0 < frac <= 0.5:
        raise ValueError(f"frac must be in (0, 0.5], got {frac}")
    ep = np.asarray(epochs, dtype=np.float64)
    v = np.asarray(deff, dtype=np.float64)
    keep = np.isfinite(v)
    ep, v = ep[keep], v[keep]
    t = _onsets(events, "events")
    out = []
    for a, b in zip(t[:-1], t[1:]):
        if b - a < min_gap:
            continue
        seg = v[(ep >= a + skip) & (ep < b - 1)]
        if seg.size < 5:
            continue
        k = max(1, int(round(frac * seg.size)))
        out.append(float(np.median(seg[-k:]) - np.median(seg[:k])))
    return np.asarray(out)


def analyse_history(history: Any, *, merge: int = 5, tolerance: int = 10, step_window: int = 10,
                    n_null: int = 1000, seed: int = 0) -> dict:
    """Spike events, periodicity, D_eff steps and their alignment for one run.

    Parameters
    ----------
    history : History or list of dict
        Rows with ``epoch``, ``loss`` and ``deff``.

    Returns
    -------
    dict
        ``spikes`` (event epochs), ``n_spikes``, ``periodicity`` (:meth:`PeriodicityResult.to_dict`),
        ``deff_steps`` and ``deff_step_sizes``, ``alignment``
        (:func:`align_spikes_with_steps`), ``deff_jump_at_spikes``.
    """
    rows = history.rows if hasattr(history, "rows") else list(history)
    if not rows:
        raise ValueError("history is empty")
    epochs = np.array([r["epoch"] for r in rows], dtype=np.int64)
    loss = np.array([np.nan if r["loss"] is None else r["loss"] for r in rows], dtype=np.float64)
    deff = np.array([np.nan if r.get("deff") is None else r["deff"] for r in rows], dtype=np.float64)
    events = spike_events(loss, merge=merge, epochs=epochs)
    per = periodicity_test(events, merge=merge, n_null=n_null, seed=seed)
    steps = deff_steps(epochs, deff, window=step_window)
    align = align_spikes_with_steps(events, steps.epochs, tolerance=tolerance, span=(epochs[0], epochs[-1]))
    return {
        "spikes": events,
        "n_spikes": int(events.size),
        "periodicity": per.to_dict(),
        "deff_steps": steps.epochs,
        "deff_step_sizes": steps.sizes,
        "alignment": align,
        "deff_jump_at_spikes": deff_jumps_at(epochs, deff, events, window=step_window),
    }
