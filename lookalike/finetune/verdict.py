"""advise's verdict: whether the best recipe beats the others by more than the folds' noise, and which
recipe to recommend when it doesn't (the simplest of those tied with it).

Every recipe is scored on the same folds, so they are compared fold by fold: for the best
row (highest mean accuracy) and each other row, the differences d_i = best_i - other_i over
the k folds, and a 95% interval for their mean:

    mean(d) ± t(0.975, k - 1) * sd(d) * sqrt(1/k + 1/(k - 1))

a paired t-interval with Nadeau and Bengio's correction ("Inference for the Generalization
Error", 2003). Paired, because the folds' difficulty is shared by every recipe and cancels
in the differences. A t-interval, not a bootstrap: with 3 to 10 folds a bootstrap over folds
has too few distinct resamples (10 with 3 folds) for a 95% interval. Corrected, because the
folds' training sets overlap, so their differences are correlated and the plain t-interval,
sd(d) * sqrt(1/k), is too narrow: it would call a winner too often (Dietterich 1998). The
``1/(k - 1)`` term is the test-to-training size ratio of k-fold cross-validation.

A row whose interval includes 0 is *tied* with the best. The best is the *winner* only when
no row is tied with it; otherwise advise recommends the simplest tied row (``simplicity``).
No correction is made for comparing the best with many rows, nor for having picked it as
the best; both favour calling a winner, so a tie is the more trustworthy answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CONFIDENCE = 0.95
CLASSIFIER_ORDER = ("svm", "logreg", "knn")  # train's default first, then the other linear model, then kNN


def difference_interval(best: Sequence[float], other: Sequence[float],
                        confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The corrected paired t-interval of mean(best - other) over the folds (the same folds for both)."""
    from scipy.stats import t

    d = np.asarray(best, dtype=float) - np.asarray(other, dtype=float)
    k = len(d)
    if k < 2 or len(other) != len(best):
        raise ValueError(f"paired differences need the same 2 or more folds, not {len(best)} and {len(other)}")
    half = float(t.ppf(0.5 + confidence / 2, k - 1)) * float(d.std(ddof=1)) * math.sqrt(1 / k + 1 / (k - 1))
    return float(d.mean()) - half, float(d.mean()) + half


@dataclass(frozen=True)
class Verdict:
    """``intervals[i]``: row i's interval of (best - row i), None for the best itself (and for a row
    scored on another number of folds, which counts as tied); ``tied``: the rows whose interval
    includes 0, the best first; ``recommended``: the simplest of them."""

    intervals: list[tuple[float, float] | None]
    tied: list[int]
    recommended: int

    @property
    def winner(self) -> bool:
        """The best row beats every other by more than the folds' noise."""
        return len(self.tied) == 1


def decide(rows: Sequence, simplicity: Callable[[object], tuple]) -> Verdict:
    """The verdict on ``rows`` (advise's ``AdviceRow``s, best first: ``rows[0]`` has the highest mean)."""
    best = [f["accuracy"] for f in rows[0].folds]
    intervals: list[tuple[float, float] | None] = [None]
    for row in rows[1:]:
        other = [f["accuracy"] for f in row.folds]
        # Another number of folds (a class lost images the CNN could not read): no pairs, so no evidence.
        intervals.append(difference_interval(best, other) if len(other) == len(best) else None)
    tied = [0] + [i for i in range(1, len(rows)) if intervals[i] is None or intervals[i][0] <= 0]
    return Verdict(intervals, tied, min(tied, key=lambda i: (simplicity(rows[i]), i)))


def simplicity(row, default_model: str, taps: dict[tuple[str, str], int]) -> tuple:
    """A sort key, simplest first: a frozen recipe before a fine-tune (which trains the network
    itself); the default model before the others, then fewer parameters; the model's embedding
    before an earlier layer, then the layer nearer the embedding (``taps``: (model, layer) in the
    order advise embedded them, the embedding first, then down the network, or as given);
    then linear SVM, logistic regression, kNN."""
    from ..featurize.models.resolve import resolve_model

    classifier = CLASSIFIER_ORDER.index(row.recipe) if row.recipe in CLASSIFIER_ORDER else len(CLASSIFIER_ORDER)
    return (row.recipe not in CLASSIFIER_ORDER, row.model != default_model, parameter_count(row.model),
            row.layer != resolve_model(row.model).default_layer, taps.get((row.model, row.layer), len(taps)), classifier)


@lru_cache(maxsize=None)
def parameter_count(model: str) -> float:
    """The parameters of a model's whole network, built on the meta device (no memory, no weights)."""
    import torch

    from ..errors import LookalikeError
    from ..featurize.models.resolve import import_timm, resolve_model

    try:
        spec = resolve_model(model)
        with torch.device("meta"):
            network = spec.builder() if spec.builder else import_timm().create_model(spec.arch, pretrained=False)
    except (LookalikeError, RuntimeError, ValueError):
        return math.inf  # not buildable here: the least simple
    return float(sum(p.numel() for p in network.parameters()))
