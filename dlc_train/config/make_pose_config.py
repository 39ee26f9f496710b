"""``make_pytorch_pose_config``: the pytorch_config.yaml DeepLabCut 3 writes for a shuffle.

The layout and defaults follow DeepLabCut 3.0.1 key for key (the tests compare against configs
DeepLabCut itself wrote), so a config made here trains in DeepLabCut and the other way round.
As in DeepLabCut, a config is the base config, merged with the task's augmentation and then
with the architecture's template (``architectures/``), plus the optional unique-bodypart and
identity heads and, for top-down models, a detector.
"""
from __future__ import annotations

import copy
import itertools
import math
import random
from pathlib import Path

from dlc_train.config import defaults
from dlc_train.config.architectures import ARCHITECTURES, ProjectShape
from dlc_train.config.architectures.heads import identity_head, unique_bodypart_head
from dlc_train.config.detectors import detector_config
from dlc_train.task import Task

TOP_DOWN_PREFIX = "top_down_"
# DeepLabCut prunes full PAF graphs of this many edges or more (15+ bodyparts) to an average
# node degree of 6 (Lauer et al. 2022, Suppl. Fig. S9c).
PAF_PRUNE_THRESHOLD = 105
PAF_AVERAGE_DEGREE = 6


def available_net_types() -> list[str]:
    """Every net_type accepted, ``top_down_<backbone>`` variants included."""
    names = set(ARCHITECTURES)
    names.update(TOP_DOWN_PREFIX + a.name for a in ARCHITECTURES.values() if a.is_backbone)
    return sorted(names)


def merge_config(config: dict, updates: dict) -> dict:
    """DeepLabCut's ``update_config``: mappings merge recursively, keeping the key order of
    ``config``; anything else replaces. An optimizer or scheduler is replaced whole (its params
    belong to its type), as DeepLabCut does."""
    config = copy.deepcopy(config)
    for key, value in updates.items():
        old = config.get(key)
        if isinstance(old, dict) and isinstance(value, dict) \
                and key not in ("optimizer", "scheduler"):
            config[key] = merge_config(old, value)
        else:
            config[key] = copy.deepcopy(value)
    return config


def full_paf_graph(num_bodyparts: int, seed: int = 0) -> list[list[int]]:
    """DeepLabCut's default PAF graph: every pair of bodyparts, pruned when large.

    DeepLabCut prunes by drawing random connected subgraphs (unseeded); ours is seeded, so the
    same project always gets the same graph, but not the one DeepLabCut would draw.
    """
    graph = [[i, j] for i, j in itertools.combinations(range(num_bodyparts), 2)]
    if len(graph) < PAF_PRUNE_THRESHOLD:
        return graph
    wanted = math.ceil(num_bodyparts * PAF_AVERAGE_DEGREE / 2)
    rng = random.Random(seed)
    while True:
        edges = sorted(rng.sample(graph, wanted))
        if _connected(num_bodyparts, edges):
            return edges


def _connected(num_nodes: int, edges: list[list[int]]) -> bool:
    parent = list(range(num_nodes))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in edges:
        parent[find(a)] = find(b)
    return len({find(i) for i in range(num_nodes)}) == 1


def _project_parts(project_config: dict) -> tuple[bool, list[str], list[str], list[str]]:
    """(multi_animal, bodyparts, unique bodyparts, individuals) as DeepLabCut reads them."""
    if project_config.get("multianimalproject"):
        return (True, list(project_config.get("multianimalbodyparts") or []),
                list(project_config.get("uniquebodyparts") or []),
                list(project_config.get("individuals") or []))
    return False, list(project_config.get("bodyparts") or []), [], ["individual_1"]


def _resolve_net_type(net_type: str, top_down: bool) -> tuple[str, bool]:
    if net_type.startswith(TOP_DOWN_PREFIX) and net_type not in ARCHITECTURES:
        base = net_type[len(TOP_DOWN_PREFIX):]
        if base in ARCHITECTURES and ARCHITECTURES[base].is_backbone:
            return base, True
    if net_type not in ARCHITECTURES:
        raise ValueError(f"unknown net_type {net_type!r}; available: "
                         f"{', '.join(available_net_types())}")
    return net_type, top_down


def _ctd_conditions(conditions) -> dict | str | None:
    """DeepLabCut's ``inference.conditions``: a BU shuffle, (shuffle, snapshot) or a file."""
    if conditions is None:
        return None
    if isinstance(conditions, bool):
        raise TypeError("ctd_conditions must be a shuffle number, (shuffle, snapshot) or a path")
    if isinstance(conditions, int):
        return {"shuffle": conditions}
    if isinstance(conditions, tuple) and len(conditions) == 2 and isinstance(conditions[0], int):
        key = "snapshot_index" if isinstance(conditions[1], int) else "snapshot"
        return {"shuffle": conditions[0], key: conditions[1]}
    if isinstance(conditions, (str, Path)):
        path = Path(conditions)
        if path.suffix not in (".h5", ".json"):
            raise ValueError(f"ctd_conditions file must be .h5 or .json, got {path}")
        return str(path.resolve())
    raise TypeError("ctd_conditions must be a shuffle number, (shuffle, snapshot) or a path")


def make_pytorch_pose_config(project_config: dict, pose_config_path: str | Path,
                             net_type: str | None = None, top_down: bool = False, *,
                             paf_graph: list[list[int]] | None = None,
                             detector_type: str = "ssdlite",
                             ctd_conditions: int | tuple | str | Path | None = None) -> dict:
    """Builds the pytorch_config.yaml dict for a shuffle of a DeepLabCut project.

    Args:
        project_config: the project's config.yaml as a dict.
        pose_config_path: where the pytorch_config.yaml will live (recorded in ``metadata``).
        net_type: e.g. "resnet_50", "top_down_hrnet_w32", "dekr_w32"; defaults to the project's
            ``default_net_type``.
        top_down: build the top-down variant of a plain backbone (like a ``top_down_`` prefix).
        paf_graph: PAF edges for multi-animal bottom-up models; default DeepLabCut's full graph
            (every bodypart pair). ``paf_best`` in the project config picks the edges kept.
        detector_type: the top-down detector ("ssdlite", or a Faster R-CNN variant).
        ctd_conditions: for ``ctd_*`` models, where conditions come from (``inference.conditions``):
            a bottom-up shuffle, (shuffle, snapshot name or index) or a predictions file.
    """
    net_type = net_type or project_config.get("default_net_type") or "resnet_50"
    net_type, top_down = _resolve_net_type(net_type, top_down)
    arch = ARCHITECTURES[net_type]
    task = (Task.TOP_DOWN if top_down else Task.BOTTOM_UP) if arch.is_backbone else arch.task

    multi_animal, bodyparts, unique, individuals = _project_parts(project_config)
    if not bodyparts:
        raise ValueError("the project config lists no bodyparts")
    if multi_animal and not individuals:
        raise ValueError("the multi-animal project config lists no individuals")
    with_identity = project_config.get("identity")
    if task != Task.BOTTOM_UP and unique:
        raise ValueError(f"{net_type} is a {task.snake_name} model, but the project has unique "
                         "bodyparts, which only bottom-up models predict (e.g. resnet_50 for "
                         "single animal, dlcrnet_stride16_ms5 or dekr_w32 for multi-animal)")
    if task != Task.BOTTOM_UP and with_identity:
        raise ValueError(f"{net_type} is a {task.snake_name} model, but the project sets "
                         "`identity: true`, which only bottom-up models learn; use e.g. "
                         "dlcrnet_stride16_ms5, or set `identity: false`")

    graph = [list(map(int, e)) for e in paf_graph] if paf_graph is not None \
        else full_paf_graph(len(bodyparts))
    # DeepLabCut reads paf_best with a default, so an explicit null stays null.
    keep = project_config.get("paf_best", list(range(len(graph))))
    if keep is not None and any(not 0 <= int(i) < len(graph) for i in keep):
        raise ValueError(f"paf_best {keep} indexes edges outside the PAF graph "
                         f"({len(graph)} edges)")
    shape = ProjectShape(num_bodyparts=len(bodyparts), num_individuals=len(individuals),
                         paf_graph=graph, paf_edges_to_keep=keep, multi_animal=multi_animal)

    cfg = defaults.pose_config(task)
    cfg = merge_config(cfg, arch.template(shape, task))
    cfg["net_type"] = net_type
    cfg["metadata"] = {
        "project_path": str(project_config.get("project_path", "")),
        "pose_config_path": str(pose_config_path),
        "bodyparts": bodyparts,
        "unique_bodyparts": unique,
        "individuals": individuals,
        "with_identity": with_identity,
    }
    heads, channels = cfg["model"]["heads"], cfg["model"]["backbone_output_channels"]
    if unique:
        heads["unique_bodypart"] = unique_bodypart_head(len(unique), channels)
    if with_identity:
        heads["identity"] = identity_head(len(individuals), channels)
    if task == Task.TOP_DOWN:
        cfg["detector"] = detector_config(detector_type)
    if task == Task.COND_TOP_DOWN:
        cfg["inference"]["conditions"] = _ctd_conditions(ctd_conditions)
    return cfg
