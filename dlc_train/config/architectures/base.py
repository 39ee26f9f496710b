"""What an architecture family contributes to a pytorch_config.yaml, and the registry of them.

DeepLabCut 3 describes each net_type by a YAML template (``config/backbones/*.yaml``,
``config/<family>/*.yaml``) that is merged over a base config. Here each family is a small module
that returns the same template as a dict (already filled in for the project), so the merge in
``make_pose_config`` reproduces DeepLabCut's result key for key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dlc_train.task import Task


@dataclass(frozen=True)
class ProjectShape:
    """The numbers of a project that shape a model.

    Args:
        num_bodyparts: multi-animal (or all) bodyparts.
        num_individuals: maximum number of animals per frame.
        paf_graph: PAF edges as bodypart index pairs (bottom-up multi-animal models).
        paf_edges_to_keep: indices of ``paf_graph`` edges used when assembling.
        multi_animal: a multi-animal project (plain backbones then take a PAF head bottom-up,
            even with one individual, as DeepLabCut does).
    """

    num_bodyparts: int
    num_individuals: int = 1
    multi_animal: bool = False
    paf_graph: list[list[int]] = field(default_factory=list)
    paf_edges_to_keep: list[int] | None = None


# A template: any of the top-level sections of a pytorch_config.yaml ("model", "method",
# "data", "runner", "train_settings", "with_center_keypoints"), as DeepLabCut's YAML has them.
Template = dict
TemplateFn = Callable[[ProjectShape, Task], Template]


@dataclass(frozen=True)
class Architecture:
    """A net_type DeepLabCut knows (or one of ours).

    Args:
        name: the net_type, e.g. "hrnet_w32".
        family: the module that describes it ("resnet", "hrnet", ...).
        template: (shape, task) -> template dict.
        is_backbone: a plain backbone (DeepLabCut's ``config/backbones``): it takes a heatmap
            head (single animal, top-down) or a heatmap + PAF head (multi-animal bottom-up), and
            has a ``top_down_`` variant. Other architectures fix their own task.
        task: the task of a non-backbone architecture (its template's ``method``).
    """

    name: str
    family: str
    template: TemplateFn
    is_backbone: bool = False
    task: Task = Task.BOTTOM_UP


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    if arch.name in ARCHITECTURES and ARCHITECTURES[arch.name] != arch:
        raise KeyError(f"net_type {arch.name!r} is already registered")
    ARCHITECTURES[arch.name] = arch
    return arch

