"""DeepLabCut 3's tracking API on finished results: ``convert_detections2tracklets`` and
``stitch_tracklets`` with DeepLabCut's arguments, and the tracking arguments of its
``analyze_videos`` (``auto_track``, ``n_tracks``, ``animal_names``, ``identity_only``).

``config`` is a bundle folder or a project's ``config.yaml``, as in
:mod:`dlc_runtime.deeplabcut_api`; the track method defaults to the project's
``default_track_method`` (DeepLabCut's), else ellipse. Results are found by DeepLabCut's names
beside each video (or in ``destfolder``).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlc_runtime.bundle import Bundle
from dlc_runtime.errors import DLCRuntimeError, OutputError
from dlc_runtime.inputs import collect_videos
from dlc_runtime.outputs import ResultPaths
from dlc_runtime.project_bundle import is_project_config, load_bundle, read_project_config
from dlc_runtime.tracking.el_format import tracklets_pickle_path
from dlc_runtime.tracking.options import TrackingOptions
from dlc_runtime.tracking.track_results import restitch, track_h5
from dlc_runtime.tracking.video_tracker import TrackingOutputs

DEFAULT_TRACK_METHOD = "ellipse"


def default_track_method(config: str | os.PathLike[str] | Bundle) -> str:
    """The project's ``default_track_method`` (DeepLabCut's config key), else ellipse."""
    if not isinstance(config, Bundle) and is_project_config(config):
        method = read_project_config(config).raw.get("default_track_method")
        if method:
            return str(method)
    return DEFAULT_TRACK_METHOD


def analysis_tracking(config: str | os.PathLike[str] | Bundle, bundle: Bundle,
                      auto_track: bool = True, n_tracks: int | None = None,
                      animal_names: Sequence[str] | None = None, identity_only: bool = False,
                      track_method: str | None = None,
                      inference_cfg: dict[str, Any] | None = None) -> TrackingOptions | None:
    """``analyze_videos``' tracking arguments as TrackingOptions (None: no tracking, which is
    also the case for single-animal bundles, as in DeepLabCut)."""
    if not auto_track or not bundle.multi_animal:
        return None
    return TrackingOptions(method=track_method or default_track_method(config),
                           n_animals=n_tracks, tracker=_tracker_settings(inference_cfg),
                           animal_names=tuple(animal_names) if animal_names else None,
                           identity_only=bool(identity_only))


def _tracker_settings(inference_cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The tracker parameters of an ``inference_cfg`` dict (its other keys are assembly's)."""
    keys = ("max_age", "min_hits", "iou_threshold", "boundingboxslack", "sd", "oks_threshold")
    return {k: v for k, v in (inference_cfg or {}).items() if k in keys}


def _results(config, videos, videotype, shuffle, trainingsetindex, destfolder
             ) -> tuple[Bundle, list[ResultPaths]]:
    bundle = load_bundle(config, shuffle, trainingsetindex)
    names = [videos] if isinstance(videos, (str, os.PathLike)) else list(videos)
    found, problems = collect_videos(names, videotype or None)
    if problems:
        raise DLCRuntimeError(f"{problems[0].path}: {problems[0].reason}")
    return bundle, [ResultPaths.for_video(v, bundle.scorer, destfolder) for v in found]


def convert_detections2tracklets(config: str | os.PathLike[str] | Bundle,
                                 videos: str | os.PathLike[str] | Sequence[Any],
                                 videotype: str = "", shuffle: int = 1,
                                 trainingsetindex: int = 0, overwrite: bool = False,
                                 destfolder: str | os.PathLike[str] | None = None,
                                 track_method: str = "", identity_only: bool = False,
                                 inferencecfg: dict[str, Any] | None = None,
                                 **ignored: Any) -> list[Path]:
    """Track each video's analysis ``.h5`` into ``<video><scorer>_el.pickle`` (``_bx``,
    ``_sk``); a video whose tracklets file exists is kept unless ``overwrite``. Returns the
    tracklets files."""
    bundle, results = _results(config, videos, videotype, shuffle, trainingsetindex,
                               destfolder)
    options = TrackingOptions(method=track_method or default_track_method(config),
                              tracker=_tracker_settings(inferencecfg),
                              identity_only=identity_only)
    from dlc_runtime.analysis_tracking import has_identity_head

    written = []
    for paths in results:
        target = tracklets_pickle_path(paths.h5, options.method)
        if target.is_file() and not overwrite:
            written.append(target)
            continue
        _need(paths.h5)
        written.append(track_h5(paths.h5, options, has_identity_head(bundle),
                                stitch=False).tracklets_pickle)
    return written


def stitch_tracklets(config: str | os.PathLike[str] | Bundle,
                     videos: str | os.PathLike[str] | Sequence[Any], videotype: str = "",
                     shuffle: int = 1, trainingsetindex: int = 0, n_tracks: int | None = None,
                     min_length: int = 10, split_tracklets: bool = True,
                     prestitch_residuals: bool = True, max_gap: int | None = None,
                     destfolder: str | os.PathLike[str] | None = None, save_as_csv: bool = False,
                     track_method: str = "", animal_names: Sequence[str] | None = None,
                     **ignored: Any) -> list[TrackingOutputs]:
    """Stitch each video's tracklets file into ``n_tracks`` animals: ``_el.h5`` (``.csv``)."""
    bundle, results = _results(config, videos, videotype, shuffle, trainingsetindex,
                               destfolder)
    options = TrackingOptions(method=track_method or default_track_method(config),
                              n_animals=n_tracks, min_length=min_length, max_gap=max_gap,
                              split_tracklets=split_tracklets,
                              prestitch_residuals=prestitch_residuals,
                              animal_names=tuple(animal_names) if animal_names else None)
    out = []
    for paths in results:
        pickle_path = tracklets_pickle_path(paths.h5, options.method)
        _need(pickle_path)
        out.append(restitch(pickle_path, options, bundle.individuals, save_as_csv))
    return out


def _need(path: Path) -> None:
    if not path.is_file():
        raise OutputError(f"no {path.name} in {path.parent}: analyze the video first "
                          "(convert_detections2tracklets needs the .h5, stitch_tracklets the "
                          "tracklets pickle)")
