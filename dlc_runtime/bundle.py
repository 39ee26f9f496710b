"""Bundle folders: loading and checking them, and writing their manifest (atomically).

A bundle is a folder holding ``manifest.yaml`` and the graphs it names (see ``docs/bundle.md``).
The runtime owns this schema (:mod:`dlc_runtime.manifest`); ``dlc_export`` builds a :class:`Manifest` and calls
:func:`write_manifest`, so the writer and the reader cannot drift apart.

Example (exporter side)::

    manifest = Manifest(
        task="bottom_up", scorer="DLC_Resnet50_openfieldOct30shuffle1_snapshot_200",
        bodyparts=["snout", "tail"], individuals=["animal"],
        input=InputSpec(height=None, width=None, batch=BatchRange(1, 8, 32)),
        graphs={"pose": GraphSpec(
            file="pose.onnx", opset=17,
            inputs=[TensorSpec("images", "uint8", ["batch", "height", "width", 3])],
            outputs=[TensorSpec("keypoints", "float32", ["batch", 1, 2, 3])])},
    )
    write_manifest(bundle_dir, manifest)   # fills graph sha256 and validates before writing
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dlc_io import atomic_write_bytes
from dlc_runtime.errors import BundleError
# The schema's names are re-exported: callers import them from here, beside Bundle.
from dlc_runtime.manifest import (MANIFEST_NAME, SCHEMA_VERSION,  # noqa: F401
                                  SUPPORTED_SCHEMA_VERSIONS, TASKS, BatchRange, ExporterInfo,
                                  GraphSpec, InputSpec, Manifest, TensorSpec)

PYTORCH_CONFIG_NAME = "pytorch_config.yaml"


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large graphs do not load into memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------


def _graph_file(bundle_dir: Path, name: str, spec: GraphSpec, where: str) -> Path:
    # Graph files must live inside the bundle: a manifest pointing elsewhere is either broken or
    # hostile, and a bundle has to be movable as one folder.
    rel = Path(spec.file)
    if rel.is_absolute() or ".." in rel.parts:
        raise BundleError(f"{where}: graphs.{name}.file {spec.file!r} must be a path inside the "
                          "bundle folder; re-export the bundle")
    return bundle_dir / rel


def is_bundle_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder whose manifest says dlc-deploy wrote it: the only kind of
    folder an export may replace (with ``overwrite``)."""
    manifest_path = Path(path) / MANIFEST_NAME
    try:
        data = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    exporter = data.get("exporter") if isinstance(data, dict) else None
    return isinstance(exporter, dict) and exporter.get("name") == ExporterInfo.name


def write_manifest(bundle_dir: str | os.PathLike[str], manifest: Manifest,
                   fill_sha256: bool = True) -> Path:
    """Validate ``manifest`` and write ``<bundle_dir>/manifest.yaml`` atomically.

    Args:
        bundle_dir: the bundle folder (created if missing). Graph files should already be there.
        manifest: what to write.
        fill_sha256: record the sha256 of every graph file that exists and has none yet.

    Returns:
        The path of the written manifest.
    """
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    target = bundle_dir / MANIFEST_NAME
    if fill_sha256:
        for name, spec in manifest.graphs.items():
            path = _graph_file(bundle_dir, name, spec, str(target))
            if spec.sha256 is None and path.is_file():
                spec.sha256 = sha256_file(path)
    data = manifest.to_dict()
    # Round-trip through the reader so an exporter can never write what the runtime refuses.
    Manifest.from_dict(data, where=str(target))
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True)
    atomic_write_bytes(target, text.encode("utf-8"))
    return target


@dataclass
class Bundle:
    """A loaded, validated bundle folder. Build it with :meth:`Bundle.load`."""

    path: Path
    manifest: Manifest

    @classmethod
    def load(cls, path: str | os.PathLike[str], verify_sha256: bool = True) -> Bundle:
        """Read and validate a bundle.

        Args:
            path: the bundle folder, or its ``manifest.yaml``.
            verify_sha256: check graph files against the sha256 recorded in the manifest.
        """
        path = Path(path)
        if path.is_file() and path.name == MANIFEST_NAME:
            path = path.parent
        manifest_path = path / MANIFEST_NAME
        if not path.is_dir():
            raise BundleError(f"bundle {path} does not exist or is not a folder; pass the "
                              "folder written by `dlc export`")
        if not manifest_path.is_file():
            raise BundleError(f"{manifest_path} is missing: {path} is not a dlc-deploy bundle; "
                              "pass the folder written by `dlc export`")
        try:
            data = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{manifest_path}: not valid YAML ({first}); re-export the "
                              "bundle") from exc
        where = str(manifest_path)
        manifest = Manifest.from_dict(data, where=where)
        for name, spec in manifest.graphs.items():
            gpath = _graph_file(path, name, spec, where)
            if not gpath.is_file():
                raise BundleError(f"{where}: graph '{name}' file {gpath} is missing; copy the "
                                  "whole bundle folder or re-export it")
            if verify_sha256:
                actual = sha256_file(gpath)
                if actual != spec.sha256:
                    raise BundleError(
                        f"{gpath}: sha256 {actual[:12]}... does not match the manifest's "
                        f"{spec.sha256[:12]}...; the file is corrupt or was replaced, "
                        "re-export or re-copy the bundle")
        return cls(path=path, manifest=manifest)

    # Convenience accessors: the pipeline and writers only need these.
    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def scorer(self) -> str:
        return self.manifest.scorer

    @property
    def bodyparts(self) -> list[str]:
        return self.manifest.bodyparts

    @property
    def unique_bodyparts(self) -> list[str]:
        return self.manifest.unique_bodyparts

    @property
    def individuals(self) -> list[str]:
        return self.manifest.individuals

    @property
    def multi_animal(self) -> bool:
        return self.manifest.multi_animal

    @property
    def input(self) -> InputSpec:
        return self.manifest.input

    @property
    def graph_paths(self) -> dict[str, Path]:
        return {name: self.path / g.file for name, g in self.manifest.graphs.items()}

    def graph(self, name: str = "pose") -> GraphSpec:
        """The spec of graph ``name``; :class:`BundleError` if the bundle has none."""
        try:
            return self.manifest.graphs[name]
        except KeyError:
            raise BundleError(f"{self.path / MANIFEST_NAME}: no graph named '{name}' (has "
                              f"{', '.join(self.manifest.graphs)}); re-export the bundle") from None

    def graph_path(self, name: str = "pose") -> Path:
        return self.path / self.graph(name).file

    def pytorch_config(self) -> dict[str, Any] | None:
        """The training config shipped for provenance, or ``None`` when the bundle has none."""
        cfg = self.path / PYTORCH_CONFIG_NAME
        if not cfg.is_file():
            return None
        try:
            data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            return None  # provenance only: never fail an analysis over it
        return data if isinstance(data, dict) else None


__all__ = [
    "SCHEMA_VERSION", "SUPPORTED_SCHEMA_VERSIONS", "MANIFEST_NAME", "TASKS",
    "BatchRange", "InputSpec", "TensorSpec", "GraphSpec", "ExporterInfo", "Manifest",
    "Bundle", "write_manifest", "sha256_file", "is_bundle_folder",
]
