"""What differs between kinds of bottom-up model: a plan gives the wrapper module (frames ->
fixed-shape outputs), its outputs and the manifest's decoder. One module per kind
(``heatmap.py``, ``paf.py``, ``dekr.py``) builds it; ``bottom_up.py`` picks one by the
bodypart predictor's type."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from dlc_export.config_view import PoseConfigView
from dlc_export.errors import ExportError
from dlc_runtime.bundle import TensorSpec


@dataclass
class BottomUpPlan:
    """How one kind of bottom-up model is exported.

    Attributes:
        kind: short name, e.g. "bottom_up_heatmap" (logs and errors).
        wrapper: uint8 NHWC frames -> outputs, in the order of ``outputs``.
        outputs: the graph's outputs with their shapes (``batch`` is dynamic).
        decoder: the manifest's ``decoder`` (``type`` picks the runtime pipeline).
        individuals, unique_bodyparts, multi_animal: the manifest's.
    """

    kind: str
    wrapper: nn.Module
    outputs: list[TensorSpec]
    decoder: dict[str, Any]
    individuals: list[str]
    unique_bodyparts: list[str] = field(default_factory=list)
    multi_animal: bool = False

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)


def optional_outputs(config: PoseConfigView, num_bodyparts_axes: list[int | str],
                     identity_name: str) -> list[TensorSpec]:
    """The outputs the optional ``unique_bodypart`` and ``identity`` heads add.

    Args:
        num_bodyparts_axes: the identity output's shape without its last axis (num_ids).
        identity_name: its name (``identity_scores`` or ``peak_identity``).
    """
    out = []
    if "unique_bodypart" in config.heads:
        if not config.unique_bodyparts:
            raise ExportError(f"{config.where}: the model has a unique_bodypart head but "
                              "metadata.unique_bodyparts is empty; the bundle cannot name them")
        out.append(TensorSpec("unique_keypoints", "float32",
                              ["batch", len(config.unique_bodyparts), 3]))
    if "identity" in config.heads:
        out.append(TensorSpec(identity_name, "float32",
                              [*num_bodyparts_axes, len(config.individuals)]))
    return out
