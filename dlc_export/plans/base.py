"""What an export plan is: everything about a kind of model that the exporter must know.

A plan gives the wrapper module (frames -> fixed-shape outputs), the output names and shapes,
and the manifest's ``task``/``decoder``/individual fields. Parity needs nothing more: the
exporter runs the runtime pipeline's own host steps (``postprocess``) on both the eager and the
exported outputs and compares the decoded keypoints (see ``dlc_export.export``).

Adding a kind of model is one module with a ``build(cfg, model, where)`` function and one entry
in ``PLANS`` (``dlc_export/plans/__init__.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from dlc_export.onnx_export import ExportError
from dlc_runtime.bundle import TensorSpec

FRAME_AXES: list[int | str] = ["batch", "height", "width", 3]


@dataclass
class ExportPlan:
    """How one kind of model is exported.

    Attributes:
        kind: short name, e.g. "bottom_up_heatmap" (logs and errors).
        wrapper: uint8 NHWC frames -> outputs, in the order of ``outputs``.
        outputs: the graph's outputs with their shapes (``batch`` is dynamic).
        decoder: the manifest's ``decoder`` (``type`` picks the runtime pipeline).
        individuals: the manifest's individuals.
        unique_bodyparts: the manifest's unique bodyparts.
        multi_animal: write the 4-level column layout.
        task: the manifest's task.
    """

    kind: str
    wrapper: nn.Module
    outputs: list[TensorSpec]
    decoder: dict[str, Any]
    individuals: list[str]
    unique_bodyparts: list[str] = field(default_factory=list)
    multi_animal: bool = False
    task: str = "bottom_up"

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec("images", "uint8", list(FRAME_AXES))]


def metadata_names(cfg: dict) -> tuple[list[str], list[str], list[str]]:
    """(bodyparts, unique bodyparts, individuals) of a pytorch_config.yaml's metadata."""
    metadata = cfg.get("metadata") or {}
    return (list(metadata.get("bodyparts") or []),
            list(metadata.get("unique_bodyparts") or []),
            list(metadata.get("individuals") or []))


def optional_outputs(cfg: dict, where: Path, num_bodyparts_axes: list[int | str],
                     identity_name: str) -> list[TensorSpec]:
    """The outputs the optional ``unique_bodypart`` and ``identity`` heads add.

    Args:
        num_bodyparts_axes: the identity output's shape without its last axis (num_ids).
        identity_name: its name (``identity_scores`` or ``peak_identity``).
    """
    heads = cfg["model"]["heads"]
    _, unique, individuals = metadata_names(cfg)
    out = []
    if "unique_bodypart" in heads:
        if not unique:
            raise ExportError(f"{where}: the model has a unique_bodypart head but "
                              "metadata.unique_bodyparts is empty; the bundle cannot name them")
        out.append(TensorSpec("unique_keypoints", "float32", ["batch", len(unique), 3]))
    if "identity" in heads:
        out.append(TensorSpec(identity_name, "float32",
                              [*num_bodyparts_axes, len(individuals)]))
    return out
