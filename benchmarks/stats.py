"""The benchmarks' statistics: medians of paired repeats, with a seeded bootstrap 95% interval, and targets
judged by the interval's worse end.

These machines are shared and noisy, so a ratio is never a ratio of two medians taken apart.
A and B run side by side in each repeat (``interleave``: one after the other, the order
alternating from repeat to repeat), each repeat gives one ratio a_i / b_i, and the figure is
the median of those ratios (``paired_ratio``). Its interval is a percentile bootstrap of that
median: ``RESAMPLES`` resamples of the repeats with replacement, drawn from a generator
seeded with ``SEED`` (the same repeats always give the same interval), and the 2.5th and
97.5th percentiles of the resampled medians. A target is met only when the interval's worse
end meets it (``meets``).

The bootstrap of a median can only land on the repeats' own values (or midpoints of two), so
with few repeats the interval is the whole range of the ratios: at 5 repeats it is [min, max]
(which holds the true median 94% of the time), from about 7 it leaves out the extremes, and it
narrows like 1/sqrt(n) after. Below ``MIN_REPEATS`` no interval is given (``low`` and
``high`` are None) and no target is met: a "95%" interval of 3 repeats would hold the median
only 75% of the time.

A figure is a plain dict, so that it goes into the JSON as it is:
``{"median", "low", "high", "n", "repeats"}`` where ``repeats`` are the per-repeat values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

SEED = 0
RESAMPLES = 10_000
CONFIDENCE = 0.95
MIN_REPEATS = 5


def median_interval(values: Sequence[float], *, resamples: int = RESAMPLES, seed: int = SEED,
                    confidence: float = CONFIDENCE) -> dict:
    """The median of ``values`` with its percentile-bootstrap interval (None below ``MIN_REPEATS`` values).

    Raises:
        ValueError: no values, or a value that is not a finite number.
    """
    data = np.asarray([float(v) for v in values], dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values: a median needs at least one")
    if not np.isfinite(data).all():
        raise ValueError(f"values must be finite numbers, got {values!r}")
    low = high = None
    if data.size >= MIN_REPEATS:
        rng = np.random.default_rng(seed)
        medians = np.median(data[rng.integers(0, data.size, size=(resamples, data.size))], axis=1)
        tail = (1 - confidence) / 2 * 100
        low, high = (float(q) for q in np.percentile(medians, [tail, 100 - tail]))
    return {"median": float(np.median(data)), "low": low, "high": high, "n": int(data.size), "repeats": data.tolist()}


def paired_ratio(a_times: Sequence[float], b_times: Sequence[float], **bootstrap) -> dict:
    """The median of the per-repeat ratios a_i / b_i, with its bootstrap interval (see ``median_interval``).

    ``a_times[i]`` and ``b_times[i]`` must come from the same repeat (``interleave``). Times give
    a ratio of times; rates (images/s) give a ratio of rates, the inverse.

    Raises:
        ValueError: the two differ in length, or a value is not positive.
    """
    if len(a_times) != len(b_times):
        raise ValueError(f"paired repeats must be as many on each side: {len(a_times)} and {len(b_times)}")
    if any(not (float(v) > 0) for v in (*a_times, *b_times)):
        raise ValueError("paired values must be positive (seconds or rates)")
    return median_interval([float(a) / float(b) for a, b in zip(a_times, b_times)], **bootstrap)


def point(value: float, n: int | None = None) -> dict:
    """A figure without an interval: a legacy ratio of medians, or a single measurement."""
    return {"median": float(value), "low": None, "high": None, "n": n, "repeats": None}


def meets(target: float, interval: dict | Sequence[float | None], better: str = "lower") -> bool:
    """Whether the interval's worse end meets ``target``: its high end when lower is better, its low end when higher is.

    ``interval`` is a figure from ``median_interval`` / ``paired_ratio`` or a (low, high) pair; one without
    an interval (too few repeats, or a legacy point) meets nothing.

    Raises:
        ValueError: ``better`` is neither "lower" nor "higher".
    """
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
    low, high = (interval["low"], interval["high"]) if isinstance(interval, dict) else interval
    worse = high if better == "lower" else low
    if worse is None or (isinstance(worse, float) and math.isnan(worse)):
        return False
    return worse <= target if better == "lower" else worse >= target


def shown(figure: dict | float, fmt: str = ".2f", suffix: str = "") -> str:
    """A figure as a table cell: ``1.13 (0.98–1.27)`` with its interval; with too few repeats for one,
    ``1.13 (3 repeats, no interval)``; a legacy point (no repeats kept), the bare value."""
    if not isinstance(figure, dict):
        return f"{figure:{fmt}}{suffix}"
    text = f"{figure['median']:{fmt}}{suffix}"
    if figure.get("low") is None:
        n = figure.get("n")
        return text if n is None else f"{text} ({n} repeat{'s' if n != 1 else ''}, no interval)"
    return f"{text} ({figure['low']:{fmt}}–{figure['high']:{fmt}})"


def interleave(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each function per repeat, run side by side: every function once per repeat, in an order
    that alternates (reversed on odd repeats), so that drift in a shared machine's load and whatever
    the previous call left behind (caches, spinning threads) fall on each alike. ``warmup`` untimed
    rounds first."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def verdict(met: bool, figure: dict) -> str:
    """A target's verdict for a table: met or missed by the interval, or why there is no interval to judge by."""
    if figure.get("low") is not None:
        return "met" if met else "**missed**"
    if figure.get("n") is None:  # a legacy figure: a point, judged as a point when it was measured
        return ("met" if met else "**missed**") + " (point estimate)"
    return "not judged: too few repeats for an interval"


def value(figure: dict | float) -> float:
    """A figure's median, or the number itself."""
    return figure["median"] if isinstance(figure, dict) else figure
