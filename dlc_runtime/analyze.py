"""``analyze_video``: bundle + video -> DeepLabCut result files."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from dlc_runtime.backends.base import Backend, make_backend
from dlc_runtime.bundle import Bundle
from dlc_runtime.errors import OutputError
from dlc_runtime.manifest import _package_version
from dlc_runtime.outputs import H5Writer, ResultPaths, build_meta, write_csv_from_h5, \
    write_meta_pickle
from dlc_runtime.pipelines.base import Pipeline, make_pipeline, pipeline_class, stream_poses
from dlc_runtime.results import ResultStage, complete_missing, find_complete
from dlc_runtime.decoders import open_video
from dlc_runtime.video import VideoIterator

logger = logging.getLogger(__name__)


@dataclass
class AnalysisResult:
    """What :func:`analyze_video` produced. Usable as a path (``os.fspath`` gives the .h5).

    Attributes:
        h5_path: the result ``.h5``.
        n_frames: frames written (or in the complete result found when skipped).
        seconds: wall time of decode + inference + writing (0 when skipped).
        fps: throughput in frames per second (0 when skipped).
        skipped: True when a complete earlier result was kept (``overwrite=False``).
        csv_path, meta_path: the other files, when they exist.
        added: outputs a skipped video's result lacked and got now (".csv", "_meta.pickle").
        video: the video analyzed.
        replaced_unrecorded: an ``.h5`` without a completion record was there and was replaced.
    """

    h5_path: Path
    n_frames: int
    seconds: float
    fps: float
    skipped: bool = False
    csv_path: Path | None = None
    meta_path: Path | None = None
    added: list[str] = field(default_factory=list)
    video: Path | None = None
    replaced_unrecorded: bool = False

    def __fspath__(self) -> str:
        return os.fspath(self.h5_path)

    def summary(self) -> str:
        """One line for the terminal."""
        if not self.skipped:
            note = " (replaced an earlier .h5 that had no completion record)" \
                if self.replaced_unrecorded else ""
            return (f"{self.video}: {self.n_frames} frames at {self.fps:.1f} frames/s -> "
                    f"{self.h5_path}{note}")
        if self.added:
            return (f"{self.video}: already analyzed ({self.n_frames} frames); wrote the missing "
                    f"{' and '.join(self.added)} from the finished .h5 -> {self.h5_path}")
        return (f"{self.video}: skipped, already analyzed ({self.n_frames} frames) -> "
                f"{self.h5_path} (overwrite=True analyzes it again)")


def _say(msg: str, progress: bool) -> None:
    # DeepLabCut talks to the terminal; with progress=False we stay quiet and only log.
    if progress:
        print(msg)
    logger.info(msg)


def _meta_from_record(bundle: Bundle, record: dict[str, Any]) -> dict[str, Any]:
    """The ``_meta.pickle`` data from the facts of a run (kept in the completion record, so a
    deleted meta file can be written again identically)."""
    run = record["run"]
    return build_meta(
        start=run["start"], stop=run["stop"], scorer=bundle.scorer, fps=run["fps"],
        batch_size=run["batch_size"], width=run["width"], height=run["height"],
        nframes=record["n_frames"], bodyparts=bundle.bodyparts,
        unique_bodyparts=bundle.unique_bodyparts, individuals=bundle.individuals,
        pytorch_config=bundle.pytorch_config(),
        iteration=bundle.manifest.source.get("iteration"),
        train_fraction=bundle.manifest.source.get("train_fraction"),
        extra={"dlc-deploy": {"version": run["version"], "bundle": run["bundle"],
                              "backend": run["backend"], "device": run["device"],
                              # records written before the decoder choice existed lack it
                              "decoder": run.get("decoder", "cpu"),
                              "n_frames_metadata": run["n_frames_metadata"]}},
    )


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
    decoder: str = "auto",
) -> AnalysisResult:
    """Analyze one video with a bundle and write DeepLabCut-compatible results.

    The ``.h5``, ``_meta.pickle`` and ``.csv`` appear under their final names only once all are
    written and the ``.h5`` reads back exactly as written; the completion record
    ``<video><scorer>_complete.json`` comes last (see :mod:`dlc_runtime.results`). Any write
    failure (a full disk) is an :class:`OutputError` and leaves no file under a final name and
    an earlier result as it was.

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
        overwrite: analyze again even when a complete result exists (it is replaced only once
            the new one is complete). Without it a complete result is kept, and only the
            outputs it lacks are written (from its ``.h5``).
        allow_truncated: keep the frames of a video that ends before its announced length.
        prefetch: decoded batches kept ready ahead of inference.
        backend_options: extra keyword arguments for the backend factory.
        decoder: "auto" (NVDEC where the backend runs on a GPU and takes device frames and
            PyNvVideoCodec is installed, else OpenCV; one log line says which and why), "cpu"
            or "nvdec" (see :mod:`dlc_runtime.decoders`).

    Returns:
        An :class:`AnalysisResult`; ``result.h5_path`` is the ``.h5``.
    """
    bundle = bundle_path if isinstance(bundle_path, Bundle) else Bundle.load(bundle_path)
    video_path = Path(video_path)
    paths = ResultPaths.for_video(video_path, bundle.scorer, dest_folder)

    record = None if overwrite else find_complete(paths)
    if record is not None:
        done = _guard_output(lambda: complete_missing(
            paths, record, save_as_csv,
            write_meta=lambda path, rec: write_meta_pickle(path, _meta_from_record(bundle, rec))),
        paths)
        logger.info("%s already analyzed at %s", video_path, paths.h5)
        return AnalysisResult(paths.h5, done.n_frames, 0.0, 0.0, skipped=True,
                              csv_path=paths.csv if paths.csv.is_file() else None,
                              meta_path=paths.meta, added=done.added, video=video_path)
    unrecorded = paths.h5.exists() and not overwrite
    if unrecorded:
        _say(f"{paths.h5} has no completion record (an interrupted run, or another tool's "
             "result): analyzing the video again; it is replaced once the new result is "
             "complete", progress)

    # Open the video before the backend: a bad file should fail in milliseconds, not after
    # loading a model onto a GPU. The decoder that reads it is chosen once the backend says
    # whether it takes device frames.
    VideoIterator(video_path, batch_size=1, allow_truncated=allow_truncated).close()
    video: Any = None
    own_backend = not isinstance(backend, Backend)
    engine: Backend | None = None
    pipeline: Pipeline | None = None
    with ResultStage(paths) as stage:
        try:
            options = dict(backend_options or {})
            graph = pipeline_class(bundle).backend_graph
            if graph != "pose":  # backends run the "pose" graph unless told otherwise
                options.setdefault("graph", graph)
            engine = (make_backend(bundle, backend, device, **options)
                      if own_backend else backend)  # type: ignore[arg-type]
            pipeline = make_pipeline(bundle, engine)
            video, decoder_reason = open_video(
                video_path, decoder=decoder, device=device, batch_size=batch_size,
                prefetch=prefetch, allow_truncated=allow_truncated,
                accepts_device_frames=pipeline.accepts_device_frames)
            pipeline.check_frame_size(video.width, video.height, source=f"video {video_path}")
            _guard_output(lambda: paths.h5.parent.mkdir(parents=True, exist_ok=True), paths)

            t0 = time.time()
            stage.part("h5")  # the writer streams to this .part file
            writer = H5Writer(paths.h5, bundle.scorer, bundle.bodyparts, bundle.individuals,
                              bundle.unique_bodyparts, bundle.multi_animal)
            try:
                with tqdm(total=video.expected_frames, unit="frames", disable=not progress,
                          desc=video_path.name) as bar:
                    # One batch in flight beside the one read: on an asynchronous backend
                    # its upload and the next decode overlap this one's compute.
                    for indices, result in stream_poses(pipeline, video):
                        writer.append(indices, result.keypoints, result.unique_keypoints)
                        bar.update(len(indices))
                writer.finish()  # reads the .part back; published below with the other files
            except BaseException:
                writer.abort()
                raise
            t1 = time.time()
        finally:
            if video is not None:
                video.close()
            # A pipeline running several graphs (top-down) opened backends of its own.
            if pipeline is not None:
                pipeline.close()
            if own_backend and engine is not None:
                engine.close()

        record = {
            "n_frames": writer.n_rows,
            "video": str(video_path),
            "run": {"start": t0, "stop": t1, "fps": video.fps, "batch_size": batch_size,
                    "width": video.width, "height": video.height,
                    "n_frames_metadata": video.n_frames, "version": _package_version(),
                    "bundle": str(bundle.path),
                    # A pipeline running several graphs names what ran each.
                    "backend": pipeline.backend_name,
                    "device": device, "decoder": decoder_reason},
        }

        def write_rest() -> dict[str, Any]:
            write_meta_pickle(stage.part("meta"), _meta_from_record(bundle, record))
            if save_as_csv:
                write_csv_from_h5(stage.staged["h5"], stage.part("csv"))
            return stage.publish(record)

        _guard_output(write_rest, paths)

    n, seconds = writer.n_rows, t1 - t0
    fps = n / seconds if seconds > 0 else 0.0
    logger.info("analyzed %d frames of %s in %.1f s (%.1f frames/s) -> %s", n, video_path,
                seconds, fps, paths.h5)
    return AnalysisResult(paths.h5, n, seconds, fps,
                          csv_path=paths.csv if save_as_csv else None, meta_path=paths.meta,
                          video=video_path, replaced_unrecorded=unrecorded)


def _guard_output(action, paths: ResultPaths):
    """Runs a step that writes results; an OSError (full disk, no permission) becomes one
    OutputError line. Staged files are removed by the caller's ResultStage."""
    try:
        return action()
    except OSError as err:
        reason = err.strerror or str(err)
        where = err.filename or paths.h5.parent
        raise OutputError(f"cannot write the results {paths.h5.name} in {paths.h5.parent}: "
                          f"{reason} ({where}); nothing was written under the final "
                          "names") from err
