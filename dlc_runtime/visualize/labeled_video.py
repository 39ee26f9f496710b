"""Labeled videos: a result's keypoints drawn on the frames of the video it came from.

The reference is DeepLabCut's ``create_labeled_video`` (fast mode): a disk of radius
``dotsize`` per keypoint whose likelihood is above ``pcutoff`` (NaN keypoints never), coloured
by bodypart or by individual from a colormap, the skeleton's segments first when asked for,
and the output named ``<h5 stem>[_id|_bp]_p<100*pcutoff>_labeled.mp4`` beside the ``.h5``
(``_id``/``_bp`` for multi-animal results, as DeepLabCut names them), written with the video's
frame rate and size, codec ``mp4v``.

Frames are decoded, drawn and encoded one at a time while the ``.h5`` is read in chunks, so
memory stays flat on any length. The video is written as ``<name>.part.mp4`` (OpenCV picks
the container from the suffix), read back to check its frame count, and only then renamed:
an earlier labeled video is never replaced by a broken one.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from dlc_io import atomic_path
from dlc_runtime.bundle import Bundle
from dlc_runtime.errors import OutputError, VideoError
from dlc_runtime.video import TRUNCATION_TOLERANCE
from dlc_runtime.visualize.poses import PoseTable, RowCursor, VisualizeError
from dlc_runtime.visualize.sources import ResultSource, locate_results
from dlc_runtime.visualize.style import (DrawSettings, colormap_colors, parse_color,
                                         resolve_settings, skeleton_pairs)

logger = logging.getLogger(__name__)

COLOR_BY = ("bodypart", "individual")
_SHIFT = 4  # OpenCV fixed-point bits: keypoints are drawn at sub-pixel positions


@dataclass
class LabeledVideo:
    """What :func:`create_labeled_video` wrote (usable as a path)."""

    path: Path
    n_frames: int
    fps: float
    width: int
    height: int
    skipped: bool = False

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def summary(self) -> str:
        if self.skipped:
            return f"{self.path} already exists: kept (overwrite=True writes it again)"
        return (f"labeled video: {self.n_frames} frames, {self.width}x{self.height} at "
                f"{self.fps:g} frames/s -> {self.path}")


def labeled_video_path(h5: str | os.PathLike[str], pcutoff: float, multi_animal: bool,
                       color_by: str) -> Path:
    """DeepLabCut's name: ``<h5 stem>[_id|_bp]_p<int(100*pcutoff)>_labeled.mp4``."""
    h5 = Path(h5)
    tag = ("_id" if color_by == "individual" else "_bp") if multi_animal else ""
    # int(), not round(): DeepLabCut's own truncation, so names match its files.
    return h5.with_name(f"{h5.stem}{tag}_p{int(100 * pcutoff)}_labeled.mp4")


def create_labeled_video(
    bundle_or_h5: str | os.PathLike[str] | Bundle,
    video: str | os.PathLike[str],
    *,
    dest_folder: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    pcutoff: float | None = None,
    dotsize: int | None = None,
    colormap: str | None = None,
    color_by: str | None = None,
    draw_skeleton: bool = False,
    skeleton: Sequence[Sequence[str]] | None = None,
    skeleton_color: str | Sequence[int] | None = None,
    bodyparts: str | Sequence[str] = "all",
    individuals: str | Sequence[str] = "all",
    codec: str = "mp4v",
    fps: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> LabeledVideo:
    """Draw a result's keypoints on every frame it covers and write the labeled video.

    Args:
        bundle_or_h5: the bundle that analyzed ``video`` (its ``.h5`` is found by scorer, as
            ``analyze_video`` names it) or a result ``.h5``.
        video: the analyzed video.
        dest_folder: where the analysis wrote its results (``--dest``); the labeled video
            goes beside the ``.h5``.
        output: write the labeled video here instead (its suffix picks the container), or
            into this folder when it is one.
        config: the project's ``config.yaml``; default: the one the bundle or the results
            name, when it exists here.
        pcutoff, dotsize, colormap, skeleton, skeleton_color: default the project's values,
            else DeepLabCut's (0.6, 8, rainbow, none, black); the skeleton defaults to the
            bundle's PAF graph when the project has none.
        color_by: "bodypart" or "individual" (default: individual for multi-animal results,
            bodypart otherwise).
        draw_skeleton: draw the skeleton's segments (both ends above pcutoff).
        bodyparts, individuals: "all" or the names to draw.
        codec: the FourCC of the output (DeepLabCut's default mp4v).
        fps: output frame rate (default: the video's).
        overwrite: replace an existing labeled video (otherwise it is kept and skipped).
        progress: show a progress bar.

    The labeled video spans the ``.h5``'s frames, from its first frame number to its last
    (every frame of the video for a full analysis); frames without a row are copied as
    they are.

    Raises:
        VisualizeError: no ``.h5``, or one made from another video (size or frame count).
        VideoError: the video cannot be read, or ends before the ``.h5``'s last frame.
        OutputError: the labeled video cannot be written (folder, codec, full disk).
    """
    if color_by is not None and color_by not in COLOR_BY:
        raise VisualizeError(f"color_by must be one of {', '.join(COLOR_BY)}, got {color_by!r}")
    source = locate_results(bundle_or_h5, video, dest_folder, config)
    video = Path(video)
    with PoseTable(source.h5) as table:
        settings = resolve_settings(project=source.project,
                                    manifest_skeleton=source.manifest_skeleton,
                                    pcutoff=pcutoff, dotsize=dotsize, colormap=colormap,
                                    skeleton=skeleton, skeleton_color=skeleton_color)
        color_by = color_by or ("individual" if table.multi_animal else "bodypart")
        final = labeled_video_path(source.h5, settings.pcutoff, table.multi_animal, color_by)
        if output is not None:
            # An existing folder receives the video under DeepLabCut's name.
            final = Path(output) / final.name if Path(output).is_dir() else Path(output)
        if final.exists() and not overwrite:
            logger.info("%s exists; kept", final)
            return LabeledVideo(final, 0, 0.0, 0, 0, skipped=True)
        if table.n_rows == 0:
            raise VisualizeError(f"{table.path} has no rows: there is nothing to draw")
        style = _Style.build(table, settings, color_by, draw_skeleton, bodyparts, individuals)
        logger.info("drawing %s on %s (pcutoff %s from %s, skeleton from %s)", table.path,
                    video, settings.pcutoff, settings.sources["pcutoff"],
                    settings.sources["skeleton"])
        return _render(table, source, video, final, style, codec, fps, progress)


@dataclass
class _Style:
    colors: np.ndarray  # (points, 3) BGR uint8
    keep: np.ndarray  # (points,) bool: drawn at all
    pairs: list[tuple[int, int]]
    skeleton_bgr: tuple[int, int, int]
    pcutoff: float
    radius: int

    @classmethod
    def build(cls, table: PoseTable, settings: DrawSettings, color_by: str,
              draw_skeleton: bool, bodyparts: str | Sequence[str],
              individuals: str | Sequence[str]) -> _Style:
        if color_by == "bodypart":
            names, per_point = table.unique_bodyparts, table.bodyparts
        else:
            names, per_point = table.unique_individuals, table.individuals
        palette = colormap_colors(settings.colormap, len(names))
        rank = {name: i for i, name in enumerate(names)}
        colors = palette[[rank[name] for name in per_point]][:, ::-1]  # RGB -> BGR
        keep = np.ones(table.n_points, bool)
        for wanted, per, what in ((bodyparts, table.bodyparts, "bodyparts"),
                                  (individuals, table.individuals, "individuals")):
            if isinstance(wanted, str) and wanted == "all":
                continue
            chosen = [wanted] if isinstance(wanted, str) else list(wanted)
            mask = np.isin(per, chosen)
            if not mask.any():
                known = ", ".join(dict.fromkeys(per))
                raise VisualizeError(f"none of the {what} {chosen} is in {table.path} "
                                     f"(it has {known})")
            keep &= mask
        pairs = skeleton_pairs(table, settings.skeleton) if draw_skeleton else []
        if draw_skeleton and not pairs:
            logger.warning("no skeleton to draw: give one, or set 'skeleton' in the project "
                           "config.yaml")
        pairs = [(a, b) for a, b in pairs if keep[a] and keep[b]]
        r, g, b = parse_color(settings.skeleton_color)
        return cls(np.ascontiguousarray(colors), keep, pairs, (b, g, r), settings.pcutoff,
                   settings.dotsize)

    def draw(self, image: np.ndarray, row: np.ndarray, offset: tuple[float, float]) -> None:
        """Draw one frame's points (points, 3) on ``image`` (BGR, in place)."""
        x, y, p = row[:, 0] + offset[0], row[:, 1] + offset[1], row[:, 2]
        with np.errstate(invalid="ignore"):
            visible = self.keep & np.isfinite(x) & np.isfinite(y) & (p > self.pcutoff)
        if not visible.any():
            return
        # Far-off points would overflow OpenCV's fixed-point ints; clipped, they draw nothing.
        limit = 4 * max(image.shape[:2]) + self.radius
        scale = 1 << _SHIFT
        px = np.round(np.clip(np.where(visible, x, 0), -limit, limit) * scale).astype(np.int64)
        py = np.round(np.clip(np.where(visible, y, 0), -limit, limit) * scale).astype(np.int64)
        thickness = max(1, self.radius // 4)
        for a, b in self.pairs:
            if visible[a] and visible[b]:
                cv2.line(image, (int(px[a]), int(py[a])), (int(px[b]), int(py[b])),
                         self.skeleton_bgr, thickness, cv2.LINE_AA, _SHIFT)
        for i in np.flatnonzero(visible):
            cv2.circle(image, (int(px[i]), int(py[i])), self.radius * scale,
                       tuple(int(c) for c in self.colors[i]), -1, cv2.LINE_AA, _SHIFT)


def _open_video(video: Path) -> cv2.VideoCapture:
    if video.is_dir():
        raise VideoError(f"{video} is a folder, not a video: pass the video that was analyzed")
    if not video.is_file():
        raise VideoError(f"cannot read video {video}: file does not exist")
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot read video {video}: OpenCV cannot open it (corrupt, "
                         "truncated or unsupported codec)")
    return cap


def _check_same_video(source: ResultSource, table: PoseTable, video: Path, width: int,
                      height: int, count: int) -> None:
    """Refuse an ``.h5`` whose analysis saw another video: frame size and metadata frame count
    from its ``_meta.pickle`` when present, and its frame numbers against the video's."""
    meta = source.meta or {}
    dims = meta.get("frame_dimensions")
    # (w, h) in DeepLabCut 3 and here, (h, w) in DeepLabCut 2's files: either is this video.
    if dims is not None and not meta.get("cropping") and len(dims) == 2 and \
            tuple(int(d) for d in dims) not in ((width, height), (height, width)):
        raise VisualizeError(f"{table.path.name} was made from a {dims[0]}x{dims[1]} video but "
                             f"{video} is {width}x{height}: pass the video that was analyzed")
    ours = meta.get("dlc-deploy")
    expected = ours.get("n_frames_metadata") if isinstance(ours, dict) else meta.get("nframes")
    if isinstance(expected, (int, np.integer)) and expected > 0 and count > 0 and \
            abs(int(expected) - count) > TRUNCATION_TOLERANCE:
        raise VisualizeError(f"{table.path.name} was made from a video of {expected} frames but "
                             f"{video} has {count}: pass the video that was analyzed")
    if count > 0 and table.last_index >= count + TRUNCATION_TOLERANCE:
        raise VisualizeError(f"{table.path.name} has keypoints up to frame {table.last_index} "
                             f"but {video} has {count} frames: pass the video that was analyzed")


def _render(table: PoseTable, source: ResultSource, video: Path, final: Path, style: _Style,
            codec: str, fps: float | None, progress: bool) -> LabeledVideo:
    cap = _open_video(video)
    try:
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
        rate = float(fps if fps is not None else cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if rate <= 0:
            raise VideoError(f"{video} does not say its frame rate: pass fps= (--fps)")
        _check_same_video(source, table, video, width, height, count)
        meta = source.meta or {}
        offset = (0.0, 0.0)
        if meta.get("cropping") and len(meta.get("cropping_parameters") or ()) == 4:
            x1, _, y1, _ = meta["cropping_parameters"]  # DeepLabCut's cropped analyses
            offset = (float(x1), float(y1))
        first, last = table.first_index, table.last_index
        n_out = last - first + 1
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _output_error(final, err) from err
        with atomic_path(final, keep_suffix=True) as tmp:
            try:
                open(tmp, "wb").close()  # OpenCV says only "not opened"; this says why
            except OSError as err:
                raise _output_error(final, err) from err
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec[:4].ljust(4)),
                                     rate, (width, height))
            if not writer.isOpened():
                raise OutputError(f"cannot write the labeled video {final}: OpenCV has no "
                                  f"encoder for codec {codec!r} in {final.suffix} files; try "
                                  "codec mp4v with an .mp4 output")
            try:
                _skip(cap, first, video)
                cursor = RowCursor(table)
                for frame in tqdm(range(first, last + 1), total=n_out, unit="frames",
                                  disable=not progress, desc=final.name):
                    ok, image = cap.read()
                    if not ok or image is None:
                        raise VideoError(f"{video} ends at frame {frame} but "
                                         f"{table.path.name} has keypoints up to frame {last}: "
                                         "pass the video that was analyzed")
                    if image.shape[:2] != (height, width):
                        raise VideoError(f"{video}: frame {frame} is {image.shape[1]}x"
                                         f"{image.shape[0]}, not {width}x{height} (variable "
                                         "resolution); re-encode the video")
                    row = cursor.at(frame)
                    if row is not None:
                        style.draw(image, row, offset)
                    writer.write(image)
            finally:
                writer.release()
            _verify(tmp, final, n_out, width, height)
    finally:
        cap.release()
    return LabeledVideo(final, n_out, rate, width, height)


def _skip(cap: cv2.VideoCapture, first: int, video: Path) -> None:
    # grab() frame by frame, not a seek: seeking is inexact in many codecs, and a keypoint
    # drawn on the neighbouring frame is worse than a slow start.
    for frame in range(first):
        if not cap.grab():
            raise VideoError(f"{video} ends at frame {frame}, before the first frame of the "
                             "results: pass the video that was analyzed")


def _verify(tmp: Path, final: Path, n_frames: int, width: int, height: int) -> None:
    check = cv2.VideoCapture(str(tmp))
    try:
        got = int(check.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if check.isOpened() else -1
        size = (int(check.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(check.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        check.release()
    if got != n_frames or size != (width, height):
        raise OutputError(f"the labeled video {final.name} reads back with {max(got, 0)} of "
                          f"{n_frames} frames (is the disk full?); nothing was written under "
                          "its name")


def _output_error(final: Path, err: OSError) -> OutputError:
    reason = err.strerror or str(err)
    return OutputError(f"cannot write the labeled video {final.name} in {final.parent}: "
                       f"{reason} ({err.filename or final.parent}); choose a writable folder "
                       "(output= / --output)")


__all__ = ["COLOR_BY", "LabeledVideo", "labeled_video_path", "create_labeled_video"]
