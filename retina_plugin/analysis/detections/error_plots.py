"""The figures of the results analysis (matplotlib, Agg): PR curves, confusion matrix, AP lost per error type."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ...evaluation.coco_matching import RECALL_POINTS  # noqa: E402

__all__ = ["plot_pr_curves", "plot_confusion_matrix", "plot_errors"]


def plot_pr_curves(a, path: str) -> str:
    """Per-class precision-recall curves (COCO's interpolated precision) at IoU 0.5 and 0.75, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    colors = plt.get_cmap("tab20" if len(a.class_names) > 10 else "tab10")
    for ax, curves, aps, iou in ((axes[0], a.pr50, a.ap50, 0.5), (axes[1], a.pr75, a.ap75, 0.75)):
        for k, name in enumerate(a.class_names):
            if a.num_gt[k] == 0:
                continue
            ax.plot(RECALL_POINTS, curves[k], color=colors(k % colors.N), label=f"{name} (AP {aps[k]:.1f})")
        ax.set_title(f"IoU {iou:g}")
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if len(a.class_names) <= 20:
            ax.legend(loc="lower left", fontsize=8)
    axes[0].set_ylabel("precision")
    fig.suptitle("Precision-recall per class")
    return _save(fig, path)


def plot_confusion_matrix(a, path: str) -> str:
    """The confusion matrix: counts, coloured by the fraction of their row."""
    m = a.confusion
    rows, cols = list(a.class_names) + ["background"], list(a.class_names) + ["missed"]
    size = max(4.0, 0.55 * len(rows) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    fraction = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(fraction, cmap="Blues", vmin=0, vmax=1)
    if len(rows) <= 25:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                color = "white" if fraction[i, j] > 0.5 else "black"
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"Confusion matrix (IoU {a.iou:g}, per-class thresholds)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the row")
    return _save(fig, path)


def plot_errors(a, path: str) -> str:
    """A bar per TIDE error type: the AP it costs (points of AP at a.iou), its count on the bar."""
    s = a.error_summary
    names = list(s["errors"])
    delta = [s["errors"][n]["delta_ap"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(names, delta, color=plt.get_cmap("tab10")(np.arange(len(names))))
    for bar, n in zip(bars, names):
        x, count = bar.get_x() + bar.get_width() / 2, str(s["errors"][n]["count"])
        ax.text(x, bar.get_height(), count, ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(f"AP{round(100 * s['iou'])} lost (points)")
    ax.set_title(f"AP{round(100 * s['iou'])} {s['ap']:.1f}: AP gained by fixing each error type (count on the bars)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _save(fig, path: str) -> str:
    """Lay out, write and close `fig`; returns `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
