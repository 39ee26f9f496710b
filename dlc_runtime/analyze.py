"""``analyze_video``: bundle + video -> DeepLabCut result files."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from dlc_runtime.backends.base import Backend, make_backend
from dlc_runtime.bundle import Bundle, _package_version
from dlc_runtime.outputs import (H5_KEY, H5Writer, ResultPaths, build_meta, write_csv_from_h5,
                                 write_meta_pickle)
from dlc_runtime.pipelines.base import make_pipeline, pipeline_class
from dlc_runtime.video import VideoIterator

logger = logging.getLogger(__name__)


@dataclass
class AnalysisResult:
    """What :func:`analyze_video` produced. Usable as a path (``os.fspath`` gives the .h5).

    Attributes:
        h5_path: the result ``.h5``.
        n_frames: frames written (or found in an existing result when skipped).
        seconds: wall time of decode + inference + writing (0 when skipped).
        fps: throughput in frames per second (0 when skipped).
        skipped: True when an existing result was kept (``overwrite=False``).
        csv_path, meta_path: the other files written, when written.
    """

    h5_path: Path
    n_frames: int
    seconds: float
    fps: float
    skipped: bool = False
    csv_path: Path | None = None
    meta_path: Path | None = None

    def __fspath__(self) -> str:
        return os.fspath(self.h5_path)


def _say(msg: str, progress: bool) -> None:
    # DeepLabCut talks to the terminal; with progress=False we stay quiet and only log.
    if progress:
        print(msg)
    logger.info(msg)


def _count_rows(h5: Path) -> int:
    # Informative only: a result written by another tool may lack the table metadata.
    try:
        with pd.HDFStore(h5, mode="r") as store:
            return int(store.get_storer(H5_KEY).nrows or 0)
    except Exception:
        return 0


def analyze_video(
    bundle_path: str | os.PathLike[str] | Bundle,
    video_path: str | os.PathLike[str],
    dest_folder: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
    backend: str | Backend = "onnxruntime",
    device: str = "cpu",
    save_as_csv: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    allow_truncated: bool = False,
    prefetch: int = 4,
    backend_options: dict[str, Any] | None = None,
) -> AnalysisResult:
    """Analyze one video with a bundle and write DeepLabCut-compatible results.

    Args:
        bundle_path: the bundle folder (or an already loaded :class:`Bundle`).
        video_path: the video.
        dest_folder: where results go (default: the video's folder).
        batch_size: frames per inference call.
        backend: a backend name (see ``dlc_runtime.backends.BACKENDS``) or a ready
            :class:`Backend` (reused across videos; not closed here).
        device: "cpu" or "cuda[:N]".
        save_as_csv: also write ``<stem><scorer>.csv``.
        progress: show a tqdm progress bar and messages.
        overwrite: re-analyze even if the ``.h5`` exists (it is replaced only once complete).
        allow_truncated: keep the frames of a video that ends before its announced length.
        prefetch: decoded batches kept ready ahead of inference.
        backend_options: extra keyword arguments for the backend factory.

    Returns:
        An :class:`AnalysisResult`; ``result.h5_path`` is the ``.h5``.
    """
    bundle = bundle_path if isinstance(bundle_path, Bundle) else Bundle.load(bundle_path)
    video_path = Path(video_path)
    paths = ResultPaths.for_video(video_path, bundle.scorer, dest_folder)

    if paths.h5.exists() and not overwrite:
        _say(f"Video {video_path} already analyzed at {paths.h5}; pass overwrite=True to redo it.",
             progress)
        n = _count_rows(paths.h5)
        return AnalysisResult(paths.h5, n, 0.0, 0.0, skipped=True,
                              csv_path=paths.csv if paths.csv.exists() else None,
                              meta_path=paths.meta if paths.meta.exists() else None)

    # Open the video before the backend: a bad file should fail in milliseconds, not after
    # loading a model onto a GPU.
    video = VideoIterator(video_path, batch_size=batch_size, prefetch=prefetch,
                          allow_truncated=allow_truncated)
    own_backend = not isinstance(backend, Backend)
    engine: Backend | None = None
    pipeline = None
    try:
        options = dict(backend_options or {})
        graph = getattr(pipeline_class(bundle), "backend_graph", "pose")
        if graph != "pose":  # backends run the "pose" graph unless told otherwise
            options.setdefault("graph", graph)
        engine = (make_backend(bundle, backend, device, **options)
                  if own_backend else backend)  # type: ignore[arg-type]
        pipeline = make_pipeline(bundle, engine)
        pipeline.check_frame_size(video.width, video.height, source=f"video {video_path}")
        paths.h5.parent.mkdir(parents=True, exist_ok=True)

        t0 = time.time()
        with H5Writer(paths.h5, bundle.scorer, bundle.bodyparts, bundle.individuals,
                      bundle.unique_bodyparts, bundle.multi_animal) as writer, \
                tqdm(total=video.expected_frames, unit="frames", disable=not progress,
                     desc=video_path.name) as bar:
            for indices, frames in video:
                result = pipeline(frames)
                writer.append(indices, result.keypoints, result.unique_keypoints)
                bar.update(len(indices))
            # Leaving the `with` commits the .h5 (atomic rename); an exception above aborts it.
        t1 = time.time()
    finally:
        video.close()
        # A pipeline running several graphs (top-down) opened backends of its own.
        close_pipeline = getattr(pipeline, "close", None)
        if close_pipeline is not None:
            close_pipeline()
        if own_backend and engine is not None:
            engine.close()

    n = writer.n_rows
    seconds = t1 - t0
    meta = build_meta(
        start=t0, stop=t1, scorer=bundle.scorer, fps=video.fps, batch_size=batch_size,
        width=video.width, height=video.height, nframes=n, bodyparts=bundle.bodyparts,
        unique_bodyparts=bundle.unique_bodyparts, individuals=bundle.individuals,
        pytorch_config=bundle.pytorch_config(),
        iteration=bundle.manifest.source.get("iteration"),
        train_fraction=bundle.manifest.source.get("train_fraction"),
        extra={"dlc-deploy": {"version": _package_version(), "bundle": str(bundle.path),
                              # A pipeline running several graphs names what ran each.
                              "backend": getattr(pipeline, "backend_name", engine.name),
                              "device": device,
                              "n_frames_metadata": video.n_frames}},
    )
    write_meta_pickle(paths.meta, meta)
    csv_path = write_csv_from_h5(paths.h5, paths.csv) if save_as_csv else None
    fps = n / seconds if seconds > 0 else 0.0
    _say(f"Analyzed {n} frames of {video_path} in {seconds:.1f} s ({fps:.1f} frames/s) -> "
         f"{paths.h5}", progress)
    return AnalysisResult(paths.h5, n, seconds, fps, csv_path=csv_path, meta_path=paths.meta)
