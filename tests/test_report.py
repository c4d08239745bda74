"""The PNGs people look at: every label inside the picture (the old PIL confusion matrix cut its column
names), the counts in the cells, and the charts of fine-tuning and advise."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from lookalike.classify.report import confusion_figure, confusion_png, score  # noqa: E402
from lookalike.finetune.charts import curves_figure, ranking_figure  # noqa: E402


def _texts_outside(figure) -> list[str]:
    """What sticks out of the figure: the drawn texts (tick labels as drawn, titles, cells) beyond its edges."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    drawn = figure.get_tightbbox(renderer)  # inches; only what is drawn (ticks inside the view limits)
    page = figure.bbox_inches
    if drawn.x0 >= page.x0 - 0.01 and drawn.y0 >= page.y0 - 0.01 and drawn.x1 <= page.x1 + 0.01 and drawn.y1 <= page.y1 + 0.01:
        return []
    return [t.get_text() for t in figure.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()
            and not page.contains(*t.get_window_extent(renderer).transformed(figure.dpi_scale_trans.inverted()).p0)]


@pytest.mark.parametrize("classes", [
    ["brick", "grass", "gravel"],
    ["a_very_long_class_name_for_a_texture", "x", "another-rather-long-class-name"],
    [f"class_{i:02}" for i in range(15)],
])
def test_no_label_of_the_confusion_matrix_is_cut(classes):
    rng = np.random.default_rng(0)
    truth = [classes[i % len(classes)] for i in range(10 * len(classes))]
    guess = [t if rng.random() < 0.7 else classes[rng.integers(len(classes))] for t in truth]
    figure = confusion_figure(score(truth, guess))
    assert _texts_outside(figure) == []
    tick_labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert tick_labels == sorted(classes)


def test_the_confusion_png_shows_counts_and_shares_of_the_true_class(tmp_path):
    report = score(["a", "a", "a", "b"], ["a", "a", "b", "b"])
    figure = confusion_figure(report)
    cells = [t.get_text() for t in figure.axes[0].texts]
    assert cells == ["2\n67%", "1\n33%", "0", "1\n100%"]
    confusion_png(report, tmp_path / "c.png")
    image = Image.open(tmp_path / "c.png")
    assert image.format == "PNG" and min(image.size) >= 400


def test_the_curves_and_the_ranking_chart_keep_every_label_inside():
    history = [{"stage": "head", "epoch": 1, "train_loss": 1.1, "train_accuracy": 0.5, "val_loss": 0.9, "val_accuracy": 0.6,
                "best": True},
               {"stage": "finetune", "epoch": 1, "train_loss": 0.7, "train_accuracy": 0.8, "val_loss": 0.6,
                "val_accuracy": 0.9, "best": True}]
    curves = curves_figure(history, "efficientnet_lite0 fine-tuned: a-rather-long-file-name.lkft")
    assert _texts_outside(curves) == []
    assert all(ax.get_legend() is None for ax in curves.axes) and len(curves.legends) == 1  # below, off the curves
    rows = [{"model": "efficientnet_lite0", "layer": layer, "recipe": recipe, "accuracy": 0.8, "accuracy_std": 0.05}
            for layer in ("flatten", "_blocks.14", "_blocks.11") for recipe in ("svm", "logreg", "knn")]
    rows.append({"model": "/home/someone/projects/models/pets-finetuned.lkft", "layer": "flatten", "recipe": "finetune",
                 "accuracy": 0.04, "accuracy_std": 0.03})
    deep = "/home/someone/projects/data/labelled/images/of/pets/and/more/folders/than/fit/on/one/line"
    figure = ranking_figure(rows, f"advise {deep}: 5-fold accuracy")
    assert _texts_outside(figure) == []
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert len(labels) == 10 and labels[-1] == "pets-finetuned.lkft · flatten · finetune"  # the file's name, not its path
    value = next(t for t in figure.axes[0].texts if t.get_text() == "0.040")
    assert value.get_color() == "black" and value.get_position()[0] > 0.07  # a short bar's value sits after it
