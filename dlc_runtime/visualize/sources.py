"""Finding what to draw: the result ``.h5`` of a video, its ``_meta.pickle`` and the project.

``dlc label-video`` and ``dlc plot`` take a bundle and a video (the ``.h5`` is the one
``analyze_video`` wrote for them: ``<dest or video folder>/<video stem><scorer>.h5``) or an
``.h5`` directly. The project's ``config.yaml`` (skeleton, pcutoff, colours) is the one given,
else the one the bundle's ``pytorch_config.yaml`` or the ``_meta.pickle`` names in
``metadata.project_path``, when it exists on this machine.
"""
from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlc_runtime.bundle import MANIFEST_NAME, Bundle
from dlc_runtime.outputs import ResultPaths
from dlc_runtime.visualize.poses import VisualizeError
from dlc_runtime.visualize.style import read_project_config

logger = logging.getLogger(__name__)

# What a _meta.pickle may hold: plain containers and numpy scalars. Anything else is not
# loaded (a pickle can run code; these files are only read for their facts).
_META_GLOBALS = {("builtins", name) for name in ("dict", "list", "tuple", "set", "frozenset",
                                                 "str", "int", "float", "bool", "complex")}
_META_GLOBALS |= {(mod, name) for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
                  for name in ("scalar",)} | {("numpy", "dtype")}


class _MetaUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _META_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a _meta.pickle")


def read_meta(h5_path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``data`` dict of ``<h5 stem>_meta.pickle`` beside the ``.h5``, or None when it is
    absent or holds more than plain values."""
    path = Path(h5_path).with_name(Path(h5_path).stem + "_meta.pickle")
    try:
        with open(path, "rb") as fh:
            meta = _MetaUnpickler(fh).load()
    except FileNotFoundError:
        return None
    except Exception as err:  # unreadable or unexpected content: checks that need it are skipped
        logger.warning("%s not read (%s); the video/result checks that need it are skipped",
                       path, err)
        return None
    data = meta.get("data") if isinstance(meta, dict) else None
    return data if isinstance(data, dict) else None


@dataclass
class ResultSource:
    """A result file and what is known about it.

    Attributes:
        h5: the result ``.h5``.
        video: the video it was made from, when given.
        bundle: the bundle, when one was given.
        meta: the ``_meta.pickle`` data, when present and readable.
        project: the project's ``config.yaml`` content, when found.
        project_path: where that config is.
        manifest_skeleton: the bundle's PAF graph as bodypart name pairs (or None).
    """

    h5: Path
    video: Path | None = None
    bundle: Bundle | None = None
    meta: dict[str, Any] | None = None
    project: dict[str, Any] | None = None
    project_path: Path | None = None
    manifest_skeleton: list[tuple[str, str]] | None = None

    def video_stem(self, scorer: str) -> str:
        """The video's name without suffix: from the video, else the ``.h5`` name before the
        scorer (DeepLabCut's ``<video stem><scorer>.h5``)."""
        if self.video is not None:
            return self.video.stem
        name = self.h5.stem
        return name.split(scorer)[0] if scorer and scorer in name else name


def locate_results(bundle_or_h5: str | os.PathLike[str] | Bundle,
                   video: str | os.PathLike[str] | None = None,
                   dest_folder: str | os.PathLike[str] | None = None,
                   config: str | os.PathLike[str] | None = None) -> ResultSource:
    """Find the ``.h5`` for a bundle and a video (or take one), with its meta and project.

    Args:
        bundle_or_h5: a bundle folder (or loaded :class:`Bundle`), or a result ``.h5``.
        video: the analyzed video (needed with a bundle).
        dest_folder: where the analysis wrote its results (``dlc analyze --dest``); default
            beside the video.
        config: the project's ``config.yaml`` (or its folder), overriding the one found.

    Raises:
        VisualizeError: no such bundle or ``.h5``, or the ``.h5`` for the video is missing.
    """
    bundle = bundle_or_h5 if isinstance(bundle_or_h5, Bundle) else None
    path = None if bundle is not None else Path(bundle_or_h5)
    video = Path(video) if video is not None else None
    if path is not None and path.is_file() and path.suffix.lower() in (".h5", ".hdf5"):
        h5 = path
    else:
        if bundle is None:
            bundle = _load_bundle(path)  # type: ignore[arg-type]
        if video is None:
            raise VisualizeError(f"with the bundle {bundle.path} give the VIDEO that was "
                                 "analyzed (or pass its .h5 instead of the bundle)")
        h5 = ResultPaths.for_video(video, bundle.scorer, dest_folder).h5
        if not h5.is_file():
            where = f" --dest {dest_folder}" if dest_folder is not None else ""
            raise VisualizeError(f"{h5} does not exist: analyze the video first (dlc analyze "
                                 f"{bundle.path} {video}{where}), or pass the .h5 it wrote")
    meta = read_meta(h5)
    source = ResultSource(h5=h5, video=video, bundle=bundle, meta=meta)
    if bundle is not None:
        graph = bundle.manifest.decoder.get("graph")
        if graph:
            parts = bundle.bodyparts
            source.manifest_skeleton = [(parts[a], parts[b]) for a, b in graph
                                        if a < len(parts) and b < len(parts)]
    _attach_project(source, config)
    return source


def _load_bundle(path: Path) -> Bundle:
    if not path.exists():
        raise VisualizeError(f"{path} does not exist: pass a bundle folder (with the VIDEO) "
                             "or a result .h5")
    if not (path.is_dir() and (path / MANIFEST_NAME).is_file()):
        raise VisualizeError(f"{path} is neither a bundle folder nor a result .h5: pass the "
                             "folder written by dlc export, or the .h5 written by dlc analyze")
    # Nothing is run: the graphs need not be hashed.
    return Bundle.load(path, verify_sha256=False)


def _attach_project(source: ResultSource, config: str | os.PathLike[str] | None) -> None:
    if config is not None:
        source.project = read_project_config(config)
        source.project_path = Path(config)
        return
    candidates = []
    pytorch_configs = [source.bundle.pytorch_config() if source.bundle else None,
                       (source.meta or {}).get("pytorch-config")]
    for cfg in pytorch_configs:
        project_path = ((cfg or {}).get("metadata") or {}).get("project_path") \
            if isinstance(cfg, dict) else None
        if isinstance(project_path, str) and project_path:
            candidates.append(Path(project_path) / "config.yaml")
    for candidate in candidates:
        if candidate.is_file():
            try:
                project = read_project_config(candidate)
            except VisualizeError as err:
                logger.warning("%s", err)
                continue
            source.project, source.project_path = project, candidate
            return


__all__ = ["ResultSource", "locate_results", "read_meta"]
