"""DeepLabCut 3's inference API on bundles, without torch.

The names of ``deeplabcut.pose_estimation_pytorch.apis`` with the arguments that make sense for an
exported bundle, so a script switches by changing its import::

    import dlc_runtime.deeplabcut_api as pep      # was: deeplabcut.pose_estimation_pytorch

    pep.analyze_videos("project/config.yaml", ["videos/"], videotype="mp4", shuffle=4)
    pep.analyze_videos("my.bundle", "videos/m3v1.mp4", destfolder="results", save_as_csv=True)
    preds = pep.analyze_images("my.bundle", "frames/")
    runner = pep.PoseInferenceRunner("my.bundle", batch_size=16)
    poses = pep.video_inference("video.mp4", runner)

``config`` is a bundle folder or a DeepLabCut project's ``config.yaml``; with a project, the bundle
``dlc export`` wrote for ``shuffle`` is found under ``<project>/exported-models-pytorch/``
(:mod:`dlc_runtime.project_bundle`). Results carry DeepLabCut 3's file names, layout and scorer.
DeepLabCut arguments with no meaning here are accepted at their default values and refused with
one line otherwise; ``docs/dlc3_compatibility.md`` lists every difference.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dlc_io import atomic_path
from dlc_runtime.backends.base import Backend
from dlc_runtime.batch import BatchSummary, VideoAnalyzer, VideosFailedError, analyze_many
from dlc_runtime.bundle import Bundle
from dlc_runtime.deeplabcut_tracking import (analysis_tracking, convert_detections2tracklets,
                                             stitch_tracklets)
from dlc_runtime.errors import DLCRuntimeError, OutputError, VideoError
from dlc_runtime.inference_runners import (DetectorInferenceRunner, InferenceRunner,
                                           PoseInferenceRunner)
from dlc_runtime.inputs import check_output_folder, collect_images, collect_videos
from dlc_runtime.outputs import make_columns
from dlc_runtime.project_bundle import is_project_config, load_bundle, read_project_config
from dlc_runtime.video import VideoIterator as _BatchedVideoIterator

#: DeepLabCut arguments accepted only at these values: (value(s) meaning "not used", why not).
_NOT_HERE: dict[str, tuple[tuple[Any, ...], str]] = {
    "modelprefix": (("",), "bundles are found in <project>/exported-models-pytorch; pass the "
                           "bundle folder"),
    "cropping": ((None,), "crop the video first (ffmpeg -vf crop=w:h:x:y)"),
    "dynamic": (((False, 0.5, 10), None), "dynamic cropping is not in the exported graphs"),
    "top_down_dynamic": ((None,), "dynamic cropping is not in the exported graphs"),
    "use_shelve": ((False,), "results always stream to the .h5 (memory stays flat)"),
    "transform": ((None,), "pre-processing is inside the exported graph"),
    "ctd_conditions": ((None,), "a conditional top-down bundle carries its conditions model"),
    "calibrate": ((False,), "tracking calibration is not supported: the tracker's parameters "
                            "are DeepLabCut's inference_cfg defaults; pass inference_cfg= to "
                            "change them"),
    "plotting": ((False, None), "labeled images are not made here"),
}
#: DeepLabCut arguments that change nothing here, accepted with any value (documented).
_IGNORED = {"robust_nframes", "show_gpu_memory", "save_as_df",
            "detector_batch_size", "pcutoff", "bbox_pcutoff", "plot_skeleton", "progress_bar"}


def _check_dlc_options(function: str, options: dict[str, Any]) -> None:
    for name, value in options.items():
        if name in _IGNORED:
            continue
        if name not in _NOT_HERE:
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r}")
        allowed, why = _NOT_HERE[name]
        if not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
            raise DLCRuntimeError(f"{function}({name}={value!r}) is not supported by "
                                  f"dlc_runtime: {why}")


def _batch_size(batch_size: int | None, config: Any) -> int:
    if batch_size is None:
        # DeepLabCut takes the project's batch_size (default 1); a bundle alone: 8.
        if not isinstance(config, Bundle) and is_project_config(config):
            return int(read_project_config(config).raw.get("batch_size") or 1)
        return 8
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def analyze_videos(config: str | os.PathLike[str] | Bundle,
                   videos: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                   videotype: str | Sequence[str] | None = "", shuffle: int = 1,
                   trainingsetindex: int = 0, save_as_csv: bool = False,
                   in_random_order: bool = False, snapshot_index: int | str | None = None,
                   detector_snapshot_index: int | str | None = None, device: str | None = None,
                   destfolder: str | os.PathLike[str] | None = None,
                   batch_size: int | None = None, overwrite: bool = False, *,
                   video_extensions: str | Sequence[str] | None = None,
                   backend: str | Backend = "onnxruntime",
                   backend_options: dict[str, Any] | None = None, decoder: str = "auto",
                   allow_truncated: bool = False, progress: bool = True,
                   auto_track: bool = True, n_tracks: int | None = None,
                   animal_names: Sequence[str] | None = None, identity_only: bool = False,
                   track_method: str | None = None, inference_cfg: dict[str, Any] | None = None,
                   ctd_tracking: bool | dict[str, Any] = False, **dlc_options: Any) -> str:
    """Analyze videos into DeepLabCut's ``<video><scorer>.h5`` (+ ``_meta.pickle``, ``.csv``),
    and, for a multi-animal bundle with ``auto_track`` (DeepLabCut 3's default), track and
    stitch the animals into ``_el.pickle`` and ``_el.h5``.

    Args:
        config: a bundle folder or a project's ``config.yaml`` (see :func:`load_bundle`).
        videos: video files, folders (their videos, one level deep) and globs.
        videotype / video_extensions: extensions to keep ("mp4", ["mp4", "avi"]); "" / None:
            files as given, folders' files with any video extension.
        shuffle, trainingsetindex, snapshot_index, detector_snapshot_index: which of the
            project's bundles (ignored with a bundle folder).
        in_random_order: analyze in random order.
        device: "cpu" or "cuda[:N]" (default: "cpu"; "cuda" for the tensorrt backend).
        destfolder: where results go (default: beside each video); checked before any work.
        batch_size: frames per inference call (default: the project's batch_size, else 8).
        overwrite: analyze again videos that have complete results.
        backend, backend_options, decoder, allow_truncated: as :func:`analyze_video`.
        progress: progress bars (one per video under a total) and messages.
        auto_track: multi-animal bundles: track while analyzing, then stitch (a video whose
            tracklets cannot be stitched keeps its analysis and says why in one line).
        n_tracks, animal_names, identity_only: DeepLabCut's; see
            :class:`~dlc_runtime.tracking.options.TrackingOptions`.
        track_method: default the project's ``default_track_method``, else ellipse.
        inference_cfg: tracker parameters (``max_age``, ``min_hits``, ``iou_threshold``,
            ``boundingboxslack``...; DeepLabCut's ``inference_cfg.yaml`` keys); other keys
            are ignored.
        ctd_tracking: a conditional top-down bundle run as DeepLabCut's CTD tracking (True,
            or a ``CTDTrackingConfig``-like dict); see :func:`analyze_video`.

    Returns:
        The scorer (as DeepLabCut returns it).

    Raises:
        VideosFailedError: some videos could not be analyzed (corrupt, missing, unwritable);
            every other video was, and ``err.summary`` lists them all.
    """
    _check_dlc_options("analyze_videos", dlc_options)
    extensions = video_extensions if video_extensions is not None else videotype
    size = _batch_size(batch_size, config)
    bundle = load_bundle(config, shuffle, trainingsetindex, snapshot_index,
                         detector_snapshot_index)
    names = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
    found, problems = collect_videos(names, extensions, shuffle=in_random_order)
    if destfolder is not None:
        check_output_folder(destfolder, "destfolder")
    if device is None:  # DeepLabCut: the model's device; here the CPU unless TensorRT runs
        device = "cuda" if backend == "tensorrt" else "cpu"
    tracking = analysis_tracking(config, bundle, auto_track, n_tracks, animal_names,
                                 identity_only, track_method, inference_cfg)
    summary = BatchSummary()
    with VideoAnalyzer(bundle, backend=backend, device=device,
                       backend_options=backend_options, batch_size=size,
                       save_as_csv=save_as_csv, overwrite=overwrite,
                       allow_truncated=allow_truncated, decoder=decoder,
                       progress=progress, track=tracking,
                       ctd_tracking=ctd_tracking) as analyzer:
        for outcome in analyze_many(analyzer, found, destfolder, problems, progress):
            summary.outcomes.append(outcome)
            tracked = outcome.result.tracking if outcome.result is not None else None
            if tracked is not None and tracked.error and progress:
                print(f"{outcome.result.video}: {tracked.summary()}")
    if summary.failed:
        raise VideosFailedError(summary)
    if progress:
        print(summary.line())
    return bundle.scorer


class VideoIterator(_BatchedVideoIterator):
    """:class:`dlc_runtime.video.VideoIterator` (batches ``(frame_indices, frames)``, decoded in
    a thread) with DeepLabCut's per-frame context, e.g. custom bounding boxes::

        video = VideoIterator("video.mp4")
        video.set_context([{"bboxes": np.array([[12, 17, 40, 50]])}, ...])  # x, y, w, h
        poses = video_inference(video, PoseInferenceRunner("top_down.bundle"))

    Args:
        video_path: the video.
        context: one dict per frame (or None).
        cropping: not supported (crop the video first); must be None.
        **options: ``dlc_runtime.video.VideoIterator``'s (``batch_size``, ``allow_truncated``...).
    """

    def __init__(self, video_path: str | os.PathLike[str],
                 context: list[dict[str, Any]] | None = None, cropping: Any = None,
                 **options: Any) -> None:
        _check_dlc_options("VideoIterator", {"cropping": cropping})
        super().__init__(video_path, **options)
        self._context: list[dict[str, Any]] | None = None
        self.set_context(context)

    def set_context(self, context: Iterable[dict[str, Any]] | None) -> None:
        self._context = None if context is None else copy.deepcopy(list(context))

    def get_context(self) -> list[dict[str, Any]] | None:
        return copy.deepcopy(self._context)


def video_inference(video: str | os.PathLike[str] | _BatchedVideoIterator,
                    pose_runner: PoseInferenceRunner,
                    detector_runner: DetectorInferenceRunner | None = None,
                    cropping: Any = None, shelf_writer: Any = None,
                    robust_nframes: bool = False, show_gpu_memory: bool = False,
                    progress: bool = True) -> list[dict[str, np.ndarray]]:
    """Predictions for every frame of a video, in memory (as DeepLabCut returns them; for long
    videos :func:`analyze_videos` streams to disk instead).

    Args:
        video: a path, or a :class:`VideoIterator` (its context, when set, gives each frame's
            boxes to a top-down ``pose_runner``); closed at the end (it runs once).
        pose_runner: runs the bundle (a top-down one with its own detector).
        detector_runner: boxes for a top-down ``pose_runner`` from this runner instead (one pass
            over the video: each batch is detected, then posed).
        cropping, shelf_writer: not supported (must be None). robust_nframes, show_gpu_memory:
            ignored (the frames decoded are counted; no GPU memory column).
    """
    _check_dlc_options("video_inference", {"cropping": cropping})
    if shelf_writer is not None:
        raise DLCRuntimeError("video_inference(shelf_writer=...) is not supported by "
                              "dlc_runtime: analyze_videos streams results to the .h5")
    if not isinstance(video, _BatchedVideoIterator):
        video = VideoIterator(video, batch_size=pose_runner.batch_size)
    context = video.get_context() if isinstance(video, VideoIterator) else None
    results: list[dict[str, np.ndarray]] = []
    try:
        with tqdm(total=video.expected_frames, unit="frames", disable=not progress,
                  desc=video.path.name) as bar:
            for indices, frames in video:
                frames = np.asarray(frames)
                contexts = [dict(context[i]) if context is not None and i < len(context)
                            else {} for i in indices]
                if detector_runner is not None:
                    for ctx, found in zip(contexts, detector_runner.predict_frames(frames)):
                        if ctx.get("bboxes") is None:
                            ctx.update(found)
                results.extend(pose_runner.predict_frames(frames, contexts))
                bar.update(len(indices))
    finally:
        # Always: the runtime's iterator runs once, and one left open at interpreter exit can
        # abort it (OpenCV's decoder torn down under a live thread).
        video.close()
    return results


def analyze_images(config: str | os.PathLike[str] | Bundle,
                   images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                   frame_type: str | None = None, output_dir: str | os.PathLike[str] | None = None,
                   shuffle: int = 1, trainingsetindex: int = 0,
                   snapshot_index: int | str | None = None,
                   detector_snapshot_index: int | str | None = None, device: str | None = None,
                   max_individuals: int | None = None, save_as_csv: bool = False,
                   progress_bar: bool = True, *, batch_size: int = 8,
                   backend: str | Backend = "onnxruntime",
                   backend_options: dict[str, Any] | None = None,
                   **dlc_options: Any) -> dict[str, dict[str, np.ndarray]]:
    """Keypoints of images, written as DeepLabCut 3 writes them:
    ``<output_dir>/image_predictions_<scorer>.h5`` (key ``predictions``, one row per image
    path, columns scorer / individuals / bodyparts / coords) and, with ``save_as_csv``, the
    ``.csv``.

    Args:
        config: a bundle folder or a project's ``config.yaml``.
        images: image files, folders (one level deep) and globs.
        frame_type: only this extension (default ``.png``, ``.jpg``, ``.jpeg``).
        output_dir: where the files go (default: the first image's folder).
        max_individuals: None or the bundle's number of individuals (its graphs' slots).

    Returns:
        ``{image path: {"bodyparts": (N, K, 3), ...}}`` (see
        :mod:`dlc_runtime.inference_runners`); ``{}`` when no image is found.
    """
    _check_dlc_options("analyze_images", dlc_options)
    bundle = load_bundle(config, shuffle, trainingsetindex, snapshot_index,
                         detector_snapshot_index)
    n_individuals = len(bundle.individuals) if bundle.multi_animal else 1
    if max_individuals not in (None, n_individuals):
        raise DLCRuntimeError(f"analyze_images(max_individuals={max_individuals}) is not "
                              f"supported: bundle {bundle.path} finds up to {n_individuals}; "
                              "re-export with another number of individuals")
    paths, problems = collect_images(images, frame_type)
    missing = [p for p in problems if p.missing]
    if missing:
        raise VideoError(f"cannot analyze images: {missing[0].reason}")
    if not paths:  # as DeepLabCut: nothing found, nothing written
        return {}
    folder = check_output_folder(output_dir if output_dir is not None else paths[0].parent,
                                 "output_dir")
    with PoseInferenceRunner(bundle, batch_size=_batch_size(batch_size, bundle),
                             device=device or "cpu", backend=backend,
                             backend_options=backend_options) as runner:
        shown = tqdm(paths, unit="images", disable=not progress_bar)
        predictions = dict(zip(map(str, paths), runner.inference(shown)))
    _write_image_predictions(bundle, predictions, folder, save_as_csv)
    return predictions


def _write_image_predictions(bundle: Bundle, predictions: dict[str, dict[str, np.ndarray]],
                             folder: Path, save_as_csv: bool) -> Path:
    """DeepLabCut's ``build_predictions_dataframe`` table, written atomically."""
    first = next(iter(predictions.values()))["bodyparts"]
    individuals = (bundle.individuals or ["individual_1"])[:first.shape[0]]
    columns = make_columns(bundle.scorer, bundle.bodyparts, individuals,
                           bundle.unique_bodyparts, multi_animal=True)
    rows = [np.concatenate([p["bodyparts"][:len(individuals)].reshape(-1),
                            p.get("unique_bodyparts", np.zeros((0,))).reshape(-1)])
            for p in predictions.values()]
    df = pd.DataFrame(np.asarray(rows, dtype=np.float64), index=list(predictions),
                      columns=columns)
    h5 = folder / f"image_predictions_{bundle.scorer}.h5"
    try:
        folder.mkdir(parents=True, exist_ok=True)  # checked writable before the inference
        with atomic_path(h5, keep_suffix=True) as tmp:
            df.to_hdf(tmp, key="predictions")
        if save_as_csv:
            with atomic_path(h5.with_suffix(".csv"), keep_suffix=True) as tmp:
                df.to_csv(tmp)
    except Exception as err:  # PyTables raises its own types for a full disk
        reason = getattr(err, "strerror", None) or (str(err).strip().splitlines() or [""])[0]
        raise OutputError(f"cannot write {h5.name} in {folder}: {reason}; nothing was written "
                          "under the final names") from err
    return h5


__all__ = ["analyze_videos", "analyze_images", "video_inference", "VideoIterator",
           "InferenceRunner", "PoseInferenceRunner", "DetectorInferenceRunner",
           "VideosFailedError", "load_bundle", "convert_detections2tracklets",
           "stitch_tracklets"]
