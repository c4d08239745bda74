"""Charts people look at: a fine-tune's curves, and advise's ranking (matplotlib, Agg, no display)."""

from __future__ import annotations

import os


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; never switches a backend already in use
    import matplotlib.pyplot as plt

    return plt


def save_png(figure, path: str | os.PathLike) -> None:
    """Write a figure and free it."""
    figure.savefig(path, dpi=100)
    _pyplot().close(figure)


def curves_png(history: list[dict], path: str | os.PathLike, title: str = "") -> None:
    save_png(curves_figure(history, title), path)


def ranking_png(rows: list[dict], path: str | os.PathLike, title: str = "", recommended: int = 0) -> None:
    save_png(ranking_figure(rows, title, recommended), path)


def curves_figure(history: list[dict], title: str = ""):
    """Loss and accuracy per epoch, train and validation, the stages marked and the kept epoch circled."""
    plt = _pyplot()
    epochs = list(range(1, len(history) + 1))
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for ax, key, label in ((loss_ax, "loss", "loss (cross-entropy, smoothed labels)"), (acc_ax, "accuracy", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", label="train (augmented)")
        val = [(e, r[f"val_{key}"]) for e, r in zip(epochs, history) if r[f"val_{key}"] is not None]
        if val:
            ax.plot(*zip(*val), "s-", label="validation")
        best = [(e, r[f"val_{key}"]) for e, r in zip(epochs, history) if r.get("best") and r[f"val_{key}"] is not None]
        if best:
            ax.plot(*best[-1], "o", markersize=14, markerfacecolor="none", markeredgecolor="black", label="kept epoch")
        switch = next((e for e, r in zip(epochs, history) if r["stage"] != history[0]["stage"]), None)
        if switch:
            ax.axvline(switch - 0.5, color="grey", linestyle="--", linewidth=1)
            ax.text(switch - 0.4, 0.02, "body unfrozen", transform=ax.get_xaxis_transform(), va="bottom", fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    acc_ax.set_ylim(0, 1.02)
    # Below both panels: inside one, the legend covered the curves or the "body unfrozen" note.
    fig.legend(*acc_ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8)
    if title:
        fig.suptitle(_wrapped(title, 100))
    return fig


def ranking_figure(rows: list[dict], title: str = "", recommended: int = 0):
    """Horizontal bars of mean accuracy (± std over folds), best on top: the recommended row darkest,
    the rows tied with the best (within the folds' noise, ``tied``) in a middle blue, the rest light."""
    from matplotlib.patches import Patch

    plt = _pyplot()
    labels = [f"{_model_name(r['model'])} · {r['layer']} · {r['recipe']}" for r in rows]
    height = 1.6 + 0.38 * len(rows)
    fig, ax = plt.subplots(figsize=(9, height), layout="constrained")
    y = list(range(len(rows)))[::-1]
    shades = {"recommended": "#1f5fa8", "tied with the best": "#5b8fcf", "behind the best": "#b9cfea"}
    kinds = ["recommended" if i == recommended else "tied with the best" if r.get("tied", i == 0) else "behind the best"
             for i, r in enumerate(rows)]
    ax.barh(y, [r["accuracy"] for r in rows], xerr=[r["accuracy_std"] for r in rows], color=[shades[k] for k in kinds],
            error_kw={"elinewidth": 1, "capsize": 3})
    fig.legend(handles=[Patch(color=shades[k], label=k) for k in shades if k in kinds], loc="outside lower center",
               ncols=3, fontsize=8)  # below the axes: inside, it would cover the bars
    for yi, r, kind in zip(y, rows, kinds):
        if r["accuracy"] >= 0.15:  # inside the bar, white on the darker blues
            ax.text(0.01, yi, f"{r['accuracy']:.3f}", va="center", ha="left", fontsize=8,
                    color="black" if kind == "behind the best" else "white")
        else:  # a short bar has no room: after its error bar, in black
            ax.text(r["accuracy"] + r["accuracy_std"] + 0.01, yi, f"{r['accuracy']:.3f}", va="center", ha="left",
                    fontsize=8, color="black")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("cross-validated accuracy (bars: ± std over folds)")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(_wrapped(title, 90), fontsize=10)
    return fig


def _model_name(model: str) -> str:
    """A .lkft's file name (its model name is an absolute path, too long for a label)."""
    return os.path.basename(model) if model.endswith(".lkft") else model


def _wrapped(text: str, width: int) -> str:
    """A long title (a deep folder's path) on several lines rather than cut at the figure's edge."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False)) or text
