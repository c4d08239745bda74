"""``advise``: the recipe table, measured on the user's labels instead of guessed.

For each candidate model and layer (the embedding and a few earlier layers spread over
depth), the images are embedded once into a store of their own, and linear SVM, logistic
regression and kNN are cross-validated on the same stratified folds. With ``finetune``,
the best frozen candidate is also fine-tuned on each fold's training images and scored on
its held-out ones, through the same files and code ``finetune`` and ``predict`` use. The
rows come back ranked by mean accuracy. A winner is named only when it beats every other row
by more than the folds' noise (``verdict``); otherwise the rows within that noise of the best
are tied, and the simplest of them is recommended. The command reproduces the recommended
row; the reading says which cell of the recipe table the folds point to, if they point to one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LookalikeError
from ..featurize.models.registry import is_model_file
from ..featurize.options import EmbedOptions
from .recipe import FinetuneConfig

logger = logging.getLogger(__name__)

CLASSIFIERS = ("svm", "logreg", "knn")
ADVISE_DIRNAME = ".lookalike-advise"
DEPTHS = (0.5, 0.7, 0.85)  # where the earlier layers sit, as a share of the network's blocks


@dataclass
class AdviceRow:
    """One recipe's cross-validated result."""

    model: str
    layer: str
    recipe: str  # a classifier name, or "finetune"
    accuracy: float
    accuracy_std: float
    macro_f1: float
    seconds: float  # fitting and scoring over all folds (the embedding is shared, see Advice.embedding)
    folds: list[dict] = field(default_factory=list)  # per fold: accuracy, macro_f1
    store: str | None = None  # where its vectors are kept
    versus_best: list[float] | None = None  # 95% interval of the best row's accuracy minus this one's, fold by fold
    tied: bool = True  # within the folds' noise of the best (its interval includes 0); the best is tied with itself


@dataclass
class Advice:
    """The ranked rows, the verdict, the recommended row's command, and what it cost."""

    source: str
    rows: list[AdviceRow]
    command: str
    reading: str
    embedded: int  # images the CNN ran on in this call (0 when every tap was cached)
    embedding: dict  # per "model @ layer": seconds, images embedded, store
    skipped: list[tuple[str, str]]
    folds: int
    verdict: str  # "winner": rows[0] beats every other row beyond the folds' noise; "tied": it does not
    recommended: int  # the index in rows of the recipe the command trains: the winner, or the simplest tied row

    def to_dict(self) -> dict:
        return {**asdict(self), "rows": [asdict(r) for r in self.rows]}


def auto_layers(model: str) -> list[str | None]:
    """The embedding (``None``) and earlier layers spread over depth: block outputs at ``DEPTHS`` of the blocks."""
    from ..featurize.models.resolve import resolve_model
    from .blocks import find_blocks

    spec = resolve_model(model)
    if spec.builder is None:  # timm: only the embedding, its blocks aren't read here
        return [None]
    blocks = [b.name for b in find_blocks(spec.builder())][:-1]  # the last one is the ImageNet classifier
    picked = []
    for depth in DEPTHS:
        name = blocks[min(len(blocks) - 2, int(depth * len(blocks)))]
        if name not in picked:
            picked.append(name)
    return [None] + picked[::-1]


def default_models() -> list[str]:
    """Every registered model whose weights are on this machine now."""
    from ..featurize import list_models, weights_available

    return [spec.name for spec in list_models() if weights_available(spec)]


def advise(source: str | os.PathLike, *, models: Sequence[str] | None = None, layers: Sequence[str] | str = "auto",
           classifiers: Sequence[str] = CLASSIFIERS, folds: int = 5, seed: int = 0, finetune: bool = False,
           finetune_config: FinetuneConfig | None = None, store_dir: str | os.PathLike | None = None,
           options: EmbedOptions | None = None, on_embedding: Callable[[str, int], Callable[[int], None]] | None = None,
           finetune_progress=None) -> Advice:
    """Measure the recipes on labelled images (one subfolder per class, or a CSV of path,label).

    Args:
        source: the labelled images.
        models: candidate models (names or ``.lkft`` paths); default: every model whose weights are here.
        layers: "auto" (the embedding and up to 3 earlier layers), or layer names ("embedding" for the default).
        classifiers: among "svm", "logreg", "knn".
        folds, seed: the stratified folds, shared by every recipe.
        finetune: also fine-tune the best frozen candidate on each fold (``finetune_config``, short by default).
        store_dir: where each (model, layer) keeps its store; default ``<images>/.lookalike-advise``.
        options: how to run the CNN (``EmbedOptions``: device, batch size, workers...).
        on_embedding: called with ("model @ layer", images to embed); returns a callable told each batch's count.

    Returns:
        ``Advice``, rows ranked best first.

    Raises:
        DatasetError: fewer than two classes; LookalikeError: an unknown classifier; the featurizer's errors.
    """
    from ..classify.labels import read_labelled
    from ..featurize.images.decode import IMAGE_EXTENSIONS

    unknown = sorted(set(classifiers) - set(CLASSIFIERS))
    if unknown:
        raise LookalikeError(f"advise cross-validates {', '.join(CLASSIFIERS)}; not {', '.join(unknown)}")
    images = read_labelled(source, IMAGE_EXTENSIONS)
    store_dir = Path(store_dir) if store_dir else images.root / ADVISE_DIRNAME
    models = [os.path.abspath(m) if is_model_file(m) else m for m in (models or default_models())]
    rows, embedding, skipped, embedded, taps = [], {}, [], 0, {}
    for model in models:
        for layer in (auto_layers(model) if layers == "auto" else [None if x == "embedding" else x for x in layers]):
            tap = _Tap(model, layer, store_dir)
            X, y, spec, skipped = tap.vectors(source, options, on_embedding)
            embedded += tap.embedded
            embedding[tap.label(spec)] = {"seconds": round(tap.seconds, 2), "embedded": tap.embedded, "store": str(tap.store)}
            taps.setdefault((model, spec["layer"]), len(taps))
            rows += [_cross_validate(name, X, y, folds, seed, model, spec["layer"], str(tap.store)) for name in classifiers]
    rows.sort(key=_rank)
    if finetune and rows:
        rows.append(_finetune_row(source, rows[0], folds, seed, finetune_config, options, finetune_progress))
        rows.sort(key=_rank)
    verdict, reading = judge(rows, taps)
    return Advice(str(source), rows, command(str(source), rows[verdict.recommended], finetune_config), reading,
                  embedded, embedding, skipped, folds, "winner" if verdict.winner else "tied", verdict.recommended)


class _Tap:
    """One (model, layer): its own store, filled once; later calls embed only new or changed images."""

    def __init__(self, model: str, layer: str | None, store_dir: Path):
        self.model, self.layer = model, layer
        self.store = store_dir / _slug(f"{Path(model).name if is_model_file(model) else model}@{layer or 'embedding'}")
        self.embedded, self.seconds = 0, 0.0

    def vectors(self, source, options, on_embedding):
        from ..training import labelled_vectors

        progress = {}

        def on_start(total: int) -> None:
            self.embedded += total
            if on_embedding and total:
                progress["batch"] = on_embedding(f"{self.model} @ {self.layer or 'embedding'}", total)

        started = time.perf_counter()
        result = labelled_vectors(source, store=self.store, model=self.model, layer=self.layer,
                                  options=options, on_start=on_start,
                                  on_batch=lambda n: progress.get("batch", lambda n: None)(n))
        self.seconds = time.perf_counter() - started
        return result

    def label(self, spec: dict) -> str:
        return f"{self.model} @ {spec['layer']}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", text)


def folds_for(y: np.ndarray, folds: int, seed: int):
    """The stratified folds every recipe shares (as ``train``'s cross-validation draws them)."""
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.unique(y, return_counts=True)[1].min())
    return StratifiedKFold(n_splits=max(2, min(folds, smallest)), shuffle=True, random_state=seed)


def _cross_validate(name: str, X, y, folds: int, seed: int, model: str, layer: str, store: str) -> AdviceRow:
    from sklearn.metrics import accuracy_score, f1_score

    from ..classify.estimators import make_classifier

    splitter = folds_for(y, folds, seed)
    per_fold, started = [], time.perf_counter()
    for train, test in splitter.split(X, y):
        k = min(5, len(train)) if name == "knn" else None
        predicted = make_classifier(name, k=k).fit(X[train], y[train]).predict(X[test])
        per_fold.append({"accuracy": float(accuracy_score(y[test], predicted)),
                         "macro_f1": float(f1_score(y[test], predicted, average="macro", zero_division=0))})
    return _row(model, layer, name, per_fold, time.perf_counter() - started, store)


def _row(model, layer, recipe, per_fold, seconds, store=None) -> AdviceRow:
    accuracy = [f["accuracy"] for f in per_fold]
    return AdviceRow(model, layer, recipe, float(np.mean(accuracy)), float(np.std(accuracy)),
                     float(np.mean([f["macro_f1"] for f in per_fold])), round(seconds, 2), per_fold, store)


def _finetune_row(source, best: AdviceRow, folds: int, seed: int, config: FinetuneConfig | None,
                  options: EmbedOptions | None, progress) -> AdviceRow:
    """Fine-tune the best frozen (model, layer) on each fold's training images; score its held-out ones."""
    from sklearn.metrics import accuracy_score, f1_score

    from ..classify.labels import read_labelled
    from ..featurize.images.decode import IMAGE_EXTENSIONS
    from ..training import predict
    from .run import finetune_images

    config = config_for(config, best)
    images = read_labelled(source, IMAGE_EXTENSIONS)
    paths, labels = np.array(images.paths), np.array(images.labels)
    # Each fold's model scores a few images once: exporting it to ONNX would cost more than it saves,
    # and would fill the export cache with networks nobody uses again.
    options = (options or EmbedOptions()).replace(runtime="torch")
    per_fold, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lookalike-advise-") as tmp:
        for i, (train, test) in enumerate(folds_for(labels, folds, seed).split(paths, labels)):
            output = Path(tmp) / f"fold{i}.lkft"
            finetune_images(list(paths[train]), list(labels[train]), output, config, device=options.device,
                            workers=options.workers, progress=progress)
            predictions, failures = predict(output, list(paths[test]), top=1, options=options)
            truth = dict(zip(paths[test], labels[test]))
            true, guessed = [truth[p.path] for p in predictions], [p.labels[0] for p in predictions]
            correct = float(accuracy_score(true, guessed)) * len(true)  # an image that failed counts as wrong
            per_fold.append({"accuracy": correct / len(test),
                             "macro_f1": float(f1_score(true, guessed, average="macro", zero_division=0))})
    return _row(best.model, best.layer, "finetune", per_fold, time.perf_counter() - started)


def config_for(config: FinetuneConfig | None, best: AdviceRow) -> FinetuneConfig:
    """The user's fine-tune settings (short by default: 4 epochs), on the best candidate's model and layer."""
    from ..featurize.models.resolve import resolve_model

    base = config or FinetuneConfig(epochs=4)
    default_layer = resolve_model(best.model).feature_node
    return FinetuneConfig.from_dict({**base.to_dict(), "model": best.model,
                                     "layer": None if best.layer == default_layer else best.layer})


def _rank(row: AdviceRow):
    return (-round(row.accuracy, 9), -round(row.macro_f1, 9), row.seconds)


def command(source: str, row: AdviceRow, config: FinetuneConfig | None) -> str:
    """The command that trains ``row`` (the recommended one) on all the images, ready to paste."""
    from ..featurize.models.resolve import resolve_model

    layer = [] if row.layer == resolve_model(row.model).default_layer else ["--layer", row.layer]
    if row.recipe != "finetune":
        words = ["lookalike", "train", source, "-o", "model.skops", "--model", row.model, *layer,
                 "--classifier", row.recipe, "--store", row.store]
        return " ".join(shlex.quote(w) for w in words)
    config = config_for(config, row)
    defaults = FinetuneConfig()
    words = ["lookalike", "finetune", source, "-o", "model.lkft", "--model", row.model, *layer]
    for key, value in config.to_dict().items():
        if key not in ("model", "layer") and value != getattr(defaults, key) and value is not None:
            flag = "--" + key.replace("_", "-")
            words += [flag] if value is True else ["--no-flip"] if key == "flip" else [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words)


def judge(rows: list[AdviceRow], taps: dict[tuple[str, str], int] | None = None):
    """Mark each row tied or not with the best (``verdict.decide``); returns (the ``Verdict``, the reading).

    ``taps``: (model, layer) in the order advise embedded them, for ``verdict.simplicity``.
    """
    from ..featurize.models.registry import DEFAULT_MODEL
    from .verdict import decide, simplicity

    verdict = decide(rows, lambda row: simplicity(row, DEFAULT_MODEL, taps or {}))
    for i, row in enumerate(rows):
        interval = verdict.intervals[i]
        row.versus_best = [round(interval[0], 6), round(interval[1], 6)] if interval else None
        row.tied = i in verdict.tied
    return verdict, _reading(rows, verdict)


def _kind(row: AdviceRow) -> str:
    from ..featurize.models.resolve import resolve_model

    if row.recipe == "finetune":
        return "finetune"
    return "embedding" if row.layer == resolve_model(row.model).default_layer else "earlier"


# What the folds show when every row tied with the best is of one kind and a row of the kind it
# is compared with is beaten: which cell of the recipe table they point to.
_DIAGNOSES = {
    "finetune": ({"embedding", "earlier"}, "fine-tuning beats the frozen recipes: the table's 'much data' row "
                                           "(fine-tune more layers, up to all)"),
    "earlier": ({"embedding"}, "an earlier layer beats the embedding: data unlike ImageNet (the table's "
                               "'earlier layer and an SVM')"),
    "embedding": ({"earlier"}, "the embedding beats the earlier layers: data like ImageNet (the table's "
                               "'a classifier on the penultimate layer')"),
}


def _reading(rows: list[AdviceRow], verdict) -> str:
    """What the folds show: a winner or a tie, and the recipe table's cell only where the margin supports it."""
    best, recommended = rows[0], rows[verdict.recommended]
    if len(rows) == 1:
        return f"one recipe measured, {_described(best)}: nothing to compare it with"
    if verdict.winner:
        said = f"{_described(best)} wins by more than the folds' noise"
    else:
        said = (f"tied: {len(verdict.tied)} recipes are within the folds' noise of the best ({best.accuracy:.3f}); "
                f"recommended: the simplest of them, {_described(recommended)}")
    kinds = {_kind(rows[i]) for i in verdict.tied}
    beaten = {_kind(row) for row in rows if not row.tied}
    if len(kinds) == 1:
        against, diagnosis = _DIAGNOSES[kinds.pop()]
        if against & beaten:
            return f"{said}; {diagnosis}"
    if len({_kind(row) for row in rows}) > 1 and not verdict.winner:
        return f"{said}; the folds can't tell which cell of the recipe table the data belongs to"
    return said


def _described(row: AdviceRow) -> str:
    return f"{row.recipe} on {Path(row.model).name if is_model_file(row.model) else row.model} @ {row.layer}"


def write_advice(advice: Advice, folder: str | os.PathLike) -> tuple[Path, Path]:
    """``advice.json`` and ``advice.png`` (a bar chart of the ranking) in ``folder``."""
    from .charts import ranking_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, png_path = folder / "advice.json", folder / "advice.png"
    json_path.write_text(json.dumps(advice.to_dict(), indent=2) + "\n")
    ranking_png([asdict(r) for r in advice.rows], png_path, title=f"advise {advice.source}: {advice.folds}-fold accuracy",
                recommended=advice.recommended)
    return json_path, png_path
