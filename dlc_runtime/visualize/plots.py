"""Plots of a result, as DeepLabCut's ``plot_trajectories`` makes them.

For each individual (one, unnamed, in a single-animal result) four images in
``<results folder>/plot-poses/<video stem>/``, named as DeepLabCut names them:

- ``trajectory<individual>.png``: x against y (y downwards, as in the image);
- ``plot<individual>.png``: x (dashed) and y (solid) against the frame number;
- ``plot-likelihood<individual>.png``: likelihood against the frame number, with pcutoff;
- ``hist<individual>.png``: histogram of the jump between consecutive analyzed frames,
  ``sqrt(dx^2 + dy^2)`` in pixels (DeepLabCut histograms dx and dy separately; one distance
  shows the tracking glitches these plots are for just as well, in one curve per bodypart).

Positions below pcutoff are left out of all but the likelihood plot. The frame axis is the
``.h5``'s own index, so a run over a frame selection plots at the true frame numbers. Each
image is written to ``<name>.part`` and renamed when complete. matplotlib is needed here
only (``pip install matplotlib``); it is imported when plotting, without pyplot.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlc_io import atomic_path
from dlc_runtime.bundle import Bundle
from dlc_runtime.errors import OutputError
from dlc_runtime.visualize.poses import PoseTable, VisualizeError
from dlc_runtime.visualize.sources import locate_results
from dlc_runtime.visualize.style import colormap_colors, resolve_settings

logger = logging.getLogger(__name__)

PLOT_NAMES = ("trajectory", "plot", "plot-likelihood", "hist")
HIST_BINS = 50


@dataclass
class PlotFiles:
    """The folder the plots went to and the files written, in order."""

    folder: Path
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.files)} plots -> {self.folder}"


def plot_folder(h5: str | os.PathLike[str], video_stem: str) -> Path:
    """``<folder of the .h5>/plot-poses/<video stem>`` (DeepLabCut's place for them)."""
    return Path(h5).parent / "plot-poses" / video_stem


def plot_trajectories(
    bundle_or_h5: str | os.PathLike[str] | Bundle,
    video: str | os.PathLike[str] | None = None,
    *,
    dest_folder: str | os.PathLike[str] | None = None,
    output_folder: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    pcutoff: float | None = None,
    colormap: str | None = None,
    alpha: float | None = None,
    bodyparts: str | Sequence[str] = "all",
    individuals: str | Sequence[str] = "all",
    resolution: int = 100,
    linewidth: float = 1.0,
    image_type: str = ".png",
) -> PlotFiles:
    """Write the trajectory, position, likelihood and jump plots of a result.

    Args:
        bundle_or_h5: the bundle that analyzed ``video``, or a result ``.h5``.
        video: the analyzed video (needed with a bundle; names the folder).
        dest_folder: where the analysis wrote its results (``--dest``).
        output_folder: write the images here instead of ``plot-poses/<video stem>``.
        config: the project's ``config.yaml`` (pcutoff, colormap, alphavalue).
        pcutoff, colormap, alpha: default the project's, else 0.6, rainbow, 0.7.
        bodyparts, individuals: "all" or the names to plot.
        resolution: dots per inch; linewidth: of the lines and histograms.
        image_type: ".png" (or another matplotlib format: ".jpg", ".svg", ".pdf").

    Raises:
        VisualizeError: no ``.h5`` or nothing to plot; matplotlib is missing.
        OutputError: the folder or an image cannot be written.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise VisualizeError("plots need matplotlib: pip install matplotlib (or the "
                             "dlc-deploy[benchmark] extra)") from None
    source = locate_results(bundle_or_h5, video, dest_folder, config)
    settings = resolve_settings(project=source.project, pcutoff=pcutoff, colormap=colormap,
                                alpha=alpha)
    with PoseTable(source.h5) as table:
        if table.n_rows == 0:
            raise VisualizeError(f"{table.path} has no rows: there is nothing to plot")
        folder = Path(output_folder) if output_folder is not None else \
            plot_folder(source.h5, source.video_stem(table.scorer))
        names = _chosen(table.unique_bodyparts, bodyparts, "bodyparts", table.path)
        animals = _chosen(table.unique_individuals, individuals, "individuals", table.path)
        frames, values = table.read_all()
        palette = colormap_colors(settings.colormap, len(names)) / 255.0
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _output_error(folder, err) from err
        result = PlotFiles(folder)
        for animal in animals:
            points = [(names.index(bp), i) for i, (ind, bp) in
                      enumerate(zip(table.individuals, table.bodyparts))
                      if ind == animal and bp in names]
            if not points:
                continue
            figures = _figures(frames, values, points, names, palette, settings.pcutoff,
                               settings.alpha, linewidth)
            for stem, fig in zip(PLOT_NAMES, figures):
                path = folder / f"{stem}{animal}{image_type}"
                _save(fig, path, image_type, resolution)
                result.files.append(path)
    logger.info("%s", result.summary())
    return result


def _chosen(available: list[str], wanted: str | Sequence[str], what: str,
            path: Path) -> list[str]:
    if isinstance(wanted, str) and wanted == "all":
        return available
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    chosen = [name for name in available if name in wanted]
    if not chosen:
        raise VisualizeError(f"none of the {what} {wanted} is in {path} (it has "
                             f"{', '.join(available)})")
    return chosen


def _figures(frames: np.ndarray, values: np.ndarray, points: list[tuple[int, int]],
             names: list[str], palette: np.ndarray, pcutoff: float, alpha: float,
             linewidth: float) -> list:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure

    trajectory, positions, likelihood, hist = (Figure(figsize=(8, 6)), Figure(figsize=(10, 3)),
                                               Figure(figsize=(10, 3)), Figure(figsize=(8, 6)))
    ax1, ax2, ax3, ax4 = (f.add_subplot(111) for f in (trajectory, positions, likelihood, hist))
    ax1.set(xlabel="X position in pixels", ylabel="Y position in pixels")
    ax1.invert_yaxis()
    ax2.set(xlabel="Frame index", ylabel="X- (dashed) and Y- (solid) position in pixels")
    ax3.set(xlabel="Frame index", ylabel="Likelihood (use to set pcutoff)")
    ax3.axhline(pcutoff, color="0.5", linestyle=":", linewidth=linewidth)
    ax4.set(xlabel="Jump between consecutive analyzed frames (pixels)", ylabel="Count")
    jumps, shown = {}, False
    with np.errstate(invalid="ignore"):
        for color_index, point in points:
            x, y, p = (values[:, point, c].astype(np.float64) for c in range(3))
            low = ~(p >= pcutoff)  # NaN likelihood counts as low
            x[low], y[low] = np.nan, np.nan
            shown |= bool((~low).any())
            color = palette[color_index]
            ax1.plot(x, y, ".", color=color, alpha=alpha)
            ax2.plot(frames, x, "--", color=color, linewidth=linewidth, alpha=alpha)
            ax2.plot(frames, y, "-", color=color, linewidth=linewidth, alpha=alpha)
            ax3.plot(frames, p, "-", color=color, linewidth=linewidth, alpha=alpha)
            jump = np.hypot(np.diff(x), np.diff(y))
            jumps[color_index] = jump[np.isfinite(jump)]
    if not shown:
        for ax in (ax1, ax2, ax4):
            ax.set_title(f"no positions with likelihood >= pcutoff {pcutoff:g}")
    top = max((j.max() for j in jumps.values() if j.size), default=1.0)
    bins = np.linspace(0.0, max(top, 1.0), HIST_BINS + 1)
    for color_index, jump in jumps.items():
        if jump.size:
            ax4.hist(jump, bins=bins, histtype="step", color=palette[color_index],
                     linewidth=linewidth)
    # One colorbar naming the bodyparts by colour, as DeepLabCut's plots have.
    cmap = ListedColormap(palette)
    mappable = ScalarMappable(norm=Normalize(-0.5, len(names) - 0.5), cmap=cmap)
    for fig, ax in zip((trajectory, positions, likelihood, hist), (ax1, ax2, ax3, ax4)):
        bar = fig.colorbar(mappable, ax=ax, ticks=range(len(names)))
        bar.set_ticklabels(names)
    return [trajectory, positions, likelihood, hist]


def _save(fig, path: Path, image_type: str, resolution: int) -> None:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=image_type.lstrip(".") or "png", bbox_inches="tight",
                        dpi=resolution)
    except OSError as err:
        raise _output_error(path.parent, err) from err
    except ValueError as err:  # matplotlib: unknown format
        raise VisualizeError(f"cannot write {path.name}: {err}") from None


def _output_error(folder: Path, err: OSError) -> OutputError:
    reason = err.strerror or str(err)
    return OutputError(f"cannot write the plots in {folder}: {reason} "
                       f"({err.filename or folder}); choose a writable folder "
                       "(output_folder= / --output)")


__all__ = ["PLOT_NAMES", "PlotFiles", "plot_folder", "plot_trajectories"]
