"""Labeled evaluation images: predictions over the human labels, as DeepLabCut 3 draws them.

One image per labeled frame in ``LabeledImages_<scorer>/`` of the evaluation folder, named
``Training-<video>-<image>`` or ``Test-<video>-<image>`` (the frame's own file name, so a
``.png`` frame gives a PNG), the frame's size at 100 dpi. Human labels are ``+``, predictions
``.`` when their likelihood is at least pcutoff and ``x`` below it; colours come from the
project's colormap, one per bodypart (``mode="bodypart"``) or per individual
(``mode="individual"``), with the project's dot size and alpha. matplotlib is optional (the
``plots`` extra) and used without pyplot, so nothing global changes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dlc_io import atomic_path
from dlc_train.data.dataset import read_image

MODES = ("bodypart", "individual")


def require_matplotlib() -> None:
    """Raises ImportError with the install line when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("plotting the evaluation needs matplotlib: pip install matplotlib "
                          "(or the dlc-deploy[plots] extra)") from None


def labeled_image_name(relative_path: str, train: bool) -> str:
    """``labeled-data/m4s1/img0001.png`` -> ``Training-m4s1-img0001.png`` / ``Test-...``."""
    parts = Path(relative_path).parts
    return "-".join(("Training" if train else "Test", parts[-2], parts[-1]))


def plot_labeled_image(image_path: str | Path, dest: Path, gt: np.ndarray, pred: np.ndarray,
                       pcutoff: float, colormap: str = "rainbow", dotsize: float = 12,
                       alpha: float = 0.7, mode: str = "bodypart",
                       unique_gt: np.ndarray | None = None,
                       unique_pred: np.ndarray | None = None) -> Path:
    """Draws one frame's labels and predictions into ``dest`` (written atomically).

    Args:
        image_path: the labeled frame.
        dest: the output file (its suffix picks the format).
        gt: (individuals, K, 3) labels (visibility <= 0: not drawn).
        pred: (individuals, K, 3) predictions, x, y, likelihood (NaN: not drawn).
        pcutoff: likelihood from which a prediction is drawn as reliable.
        unique_gt, unique_pred: (1, U, 3) unique bodyparts, drawn after the others.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import matplotlib

    if mode not in MODES:
        raise ValueError(f"plot mode {mode!r}: use one of {', '.join(MODES)}")
    frame = read_image(image_path)
    h, w = frame.shape[:2]
    fig = Figure(figsize=(w / 100, h / 100), dpi=100, frameon=False)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    ax.axis("off")
    ax.imshow(frame, "gray")
    ax.set_xlim(0, w)
    ax.set_ylim(0, h)
    ax.invert_yaxis()

    groups = _groups(gt, pred, mode)
    if unique_gt is not None and unique_pred is not None:
        groups += _groups(unique_gt, unique_pred, "bodypart")
    cmap = matplotlib.colormaps[colormap].resampled(len(groups) + (mode == "individual"))
    for n, (truth, guess) in enumerate(groups):
        color = cmap(n)
        truth = truth[truth[:, 2] > 0]
        ax.plot(truth[:, 0], truth[:, 1], "+", ms=dotsize, alpha=alpha, color=color)
        with np.errstate(invalid="ignore"):
            reliable = guess[:, 2] >= pcutoff
        for marker, rows in ((".", guess[reliable]), ("x", guess[~reliable])):
            if len(rows):
                ax.plot(rows[:, 0], rows[:, 1], marker, ms=dotsize, alpha=alpha, color=color)
    fig.subplots_adjust(left=0, bottom=0, right=1, top=1, wspace=0, hspace=0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format=dest.suffix.lstrip(".") or "png")
    return dest


def _groups(gt: np.ndarray, pred: np.ndarray, mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(labels, predictions) pairs that share a colour: per bodypart or per individual."""
    gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
    if mode == "bodypart":
        return [(gt[:, k], pred[:, k]) for k in range(gt.shape[1])]
    return [(gt[n], pred[n]) for n in range(gt.shape[0])]
