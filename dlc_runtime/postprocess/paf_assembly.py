"""Host-side assembly of individuals from PAF peaks and edge affinities (numpy only).

This is the half of the PAF predictor that is not tensor work: it takes the fixed-size outputs
of ``PartAffinityFieldPredictor.forward_tensors`` (also the outputs of an exported graph) and
groups the peaks into animals the way DeepLabCut 3's ``Assembler`` does with the settings its
PAF predictor uses (optimal pairing per edge, no calibration, no temporal window, no identity):

1. per kept edge, pair the ``num_animals`` most confident peaks of its two bodyparts (those
   scoring >= ``pcutoff``) by maximum-affinity assignment; pairs >= ``min_affinity`` become links;
2. connected groups of links covering exactly one of each bodypart become animals at once;
3. the remaining links, strongest first, seed animals grown greedily by affinity;
4. surplus partial animals are merged through unused links, then grown once more;
5. animals with a single link are dropped, overlapping ones suppressed (``max_overlap``), the
   rest ordered by total affinity and cut to ``num_animals``.

No torch and no scipy here (the assignment is a small Hungarian solver). It lives in the runtime
(the bottom layer) and ``dlc_train``'s PAF predictor imports it from here, so training evaluation
and deployment assemble with the same code (see docs/architecture.md, dependency rule).
"""
from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from typing import Sequence

import numpy as np

__all__ = ["PafAssembler", "linear_sum_assignment"]

_PCUTOFF = 0.1  # DeepLabCut's Assembler default; its PAF predictor never changes it


# ------------------------------------------------------------------------------ assignment


def linear_sum_assignment(cost: np.ndarray, maximize: bool = False) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """Optimal assignment of rows to columns (the Hungarian method, O(n^2 m)).

    Same contract as ``scipy.optimize.linear_sum_assignment`` for finite costs: returns
    (rows, cols), rows ascending, ``min(n, m)`` pairs. Where several assignments are optimal the
    one chosen may differ from scipy's.

    Args:
        cost: (n, m) finite costs.
        maximize: maximize the sum instead of minimizing it.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be 2-D, got shape {cost.shape}")
    if cost.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if maximize:
        cost = -cost
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    # Potentials u (rows), v (columns); match[j] = row (1-based) holding column j, 0 = free.
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    match = np.zeros(m + 1, dtype=np.int64)
    way = np.zeros(m + 1, dtype=np.int64)
    for row in range(1, n + 1):
        match[0] = row
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            free = ~used[1:]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (reduced < minv[1:])
            minv[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    cols = np.flatnonzero(match[1:])
    rows = match[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows, kind="stable")
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


# ------------------------------------------------------------------------------ data types


class _Joint:
    """A peak: position, confidence, bodypart (label) and index in DeepLabCut's numbering."""

    __slots__ = ("x", "y", "score", "label", "idx")

    def __init__(self, x: float, y: float, score: float, label: int, idx: int):
        self.x, self.y, self.score, self.label, self.idx = x, y, score, label, idx


class _Link:
    __slots__ = ("j1", "j2", "affinity")

    def __init__(self, j1: _Joint, j2: _Joint, affinity: np.float32):
        self.j1, self.j2, self.affinity = j1, j2, affinity

    @property
    def idx(self) -> tuple[int, int]:
        return self.j1.idx, self.j2.idx


class _Animal:
    """A (partial) individual: at most one joint per bodypart, and the links that built it."""

    def __init__(self, num_parts: int):
        self.xy = np.full((num_parts, 2), np.nan)
        self.score = np.zeros(num_parts)
        self.labels: set[int] = set()
        self.joint_ids: set[int] = set()
        self.links: list[_Link] = []
        self.total_affinity = 0  # sum of link affinities (the ranking score)

    def __len__(self) -> int:
        return len(self.labels)

    def shares_label(self, other: "_Animal") -> bool:
        return bool(self.labels & other.labels)

    def add_joint(self, joint: _Joint) -> bool:
        if joint.label in self.labels:
            return False
        self.xy[joint.label] = joint.x, joint.y
        self.score[joint.label] = joint.score
        self.labels.add(joint.label)
        self.joint_ids.add(joint.idx)
        return True

    def add_link(self, link: _Link) -> bool:
        """Adds the link's joints; True when it brought a new joint. A link between two joints
        already in the animal still counts (affinity and link count), as in DeepLabCut."""
        i, j = link.idx
        if i in self.joint_ids and j in self.joint_ids:
            self.total_affinity += link.affinity
            self.links.append(link)
            return False
        if link.j1.label in self.labels and link.j2.label in self.labels:
            return False
        self.add_joint(link.j1)
        self.add_joint(link.j2)
        self.total_affinity += link.affinity
        self.links.append(link)
        return True

    def merged(self, other: "_Animal") -> "_Animal":
        out = _Animal(self.xy.shape[0])
        for link in self.links + other.links:
            out.add_link(link)
        return out

    def overlap(self, other: "_Animal") -> float:
        """Fraction of keypoints inside the two animals' bounding-box intersection (the smaller
        of the two fractions); 0 when the boxes are disjoint."""
        a = self.xy[~np.isnan(self.xy).any(axis=1)]
        b = other.xy[~np.isnan(other.xy).any(axis=1)]
        lo = np.maximum(a.min(axis=0), b.min(axis=0))
        hi = np.minimum(a.max(axis=0), b.max(axis=0))
        if hi[0] < lo[0] or hi[1] < lo[1]:
            return 0.0
        in_a = np.all((a >= lo) & (a <= hi), axis=1).sum()
        in_b = np.all((b >= lo) & (b <= hi), axis=1).sum()
        return min(in_a / len(self), in_b / len(other))


# ------------------------------------------------------------------------------ assembler


class PafAssembler:
    """Groups peaks into individuals (see the module docstring for the steps).

    Args:
        graph: all PAF edges [[bodypart_a, bodypart_b], ...].
        edges_to_keep: indices in ``graph`` of the edges used; the ``affinities`` input holds
            them in this order.
        num_animals: maximum individuals per image.
        num_multibodyparts: bodyparts of an individual (heatmap channels 0..K-1).
        num_uniquebodyparts: unique bodyparts (the channels after them), one each per image.
        min_affinity: weakest link kept.
        pcutoff: weakest peak used to build links.
        min_n_links: animals with fewer links (but at least one) are dropped.
        max_overlap: pose NMS threshold (off outside (0, 1)).
        clip_scores: clip the output scores to [0, 1].
    """

    def __init__(self, graph: Sequence[Sequence[int]], edges_to_keep: Sequence[int],
                 num_animals: int, num_multibodyparts: int, num_uniquebodyparts: int = 0,
                 min_affinity: float = 0.05, pcutoff: float = _PCUTOFF, min_n_links: int = 2,
                 max_overlap: float = 0.8, clip_scores: bool = False):
        self.graph = [tuple(int(i) for i in edge) for edge in graph]
        self.edges_to_keep = [int(k) for k in edges_to_keep]
        self.num_animals = int(num_animals)
        self.num_multibodyparts = int(num_multibodyparts)
        self.num_uniquebodyparts = int(num_uniquebodyparts)
        self.min_affinity = min_affinity
        self.pcutoff = pcutoff
        self.min_n_links = min_n_links
        self.max_overlap = max_overlap
        self.clip_scores = clip_scores

    def __call__(self, peaks: np.ndarray, scores: np.ndarray, peak_index: np.ndarray,
                 affinities: np.ndarray) -> dict[str, np.ndarray]:
        """Args:
            peaks: (B, K, P, 2) x, y in input pixels, per bodypart, most confident first.
            scores: (B, K, P) peak scores (0 where no peak).
            peak_index: (B, K, P) raster index of the peak's cell, -1 where no peak.
            affinities: (B, E, P, P) affinity of (source peak, target peak) for each kept edge.

        Returns:
            "poses": (B, num_animals, num_multibodyparts, 3) x, y, score; missing keypoints and
            animals are NaN, NaN, 0. "affinity": (B, num_animals) mean link affinity (0 where no
            animal). "unique_poses": (B, 1, num_uniquebodyparts, 3) when there are unique
            bodyparts.
        """
        peaks, scores = np.asarray(peaks), np.asarray(scores)
        peak_index, affinities = np.asarray(peak_index), np.asarray(affinities)
        batch = peaks.shape[0]
        poses = np.full((batch, self.num_animals, self.num_multibodyparts, 3), np.nan,
                        dtype=np.float32)
        poses[..., 2] = 0
        mean_affinity = np.zeros((batch, self.num_animals), dtype=np.float32)
        unique = np.full((batch, 1, self.num_uniquebodyparts, 3), np.nan, dtype=np.float32)
        unique[..., 2] = 0
        for b in range(batch):
            animals, unique_b = self.assemble_frame(peaks[b], scores[b], peak_index[b],
                                                    affinities[b])
            for a, animal in enumerate(animals[: self.num_animals]):
                poses[b, a, :, :2] = animal.xy
                poses[b, a, :, 2] = animal.score
                mean_affinity[b, a] = animal.total_affinity / max(len(animal.links), 1)
            if unique_b is not None:
                unique[b, 0] = unique_b
        if self.clip_scores:
            np.clip(poses[..., 2], 0, 1, out=poses[..., 2])
            np.clip(unique[..., 2], 0, 1, out=unique[..., 2])
        out = {"poses": poses, "affinity": mean_affinity}
        if self.num_uniquebodyparts:
            out["unique_poses"] = unique
        return out

    # -------------------------------------------------------------------------- one frame
    def _joints(self, peaks: np.ndarray, scores: np.ndarray,
                peak_index: np.ndarray) -> dict[int, list[_Joint]]:
        """Valid peaks per bodypart, most confident first, numbered as DeepLabCut numbers them
        (by bodypart, then raster order)."""
        by_part: dict[int, list[_Joint]] = {}
        next_idx = 0
        for label in range(peaks.shape[0]):
            slots = np.flatnonzero(peak_index[label] >= 0)
            # DeepLabCut skips a bodypart whose peak coordinates are all exactly 0.
            if slots.size == 0 or not np.any(peaks[label, slots]):
                continue
            raster = slots[np.argsort(peak_index[label, slots], kind="stable")]
            ids = {int(s): next_idx + n for n, s in enumerate(raster)}
            next_idx += len(raster)
            by_part[label] = [
                _Joint(float(peaks[label, s, 0]), float(peaks[label, s, 1]),
                       float(scores[label, s]), label, ids[int(s)])
                for s in slots]
        return by_part

    def assemble_frame(self, peaks: np.ndarray, scores: np.ndarray, peak_index: np.ndarray,
                       affinities: np.ndarray) -> tuple[list[_Animal], np.ndarray | None]:
        """One image: (K, P, 2), (K, P), (K, P), (E, P, P) -> (animals, unique (U, 3) or None)."""
        joints = self._joints(peaks, scores, peak_index)
        num_parts = self.num_multibodyparts

        unique = None
        if self.num_uniquebodyparts:
            unique = np.full((self.num_uniquebodyparts, 3), np.nan)
            unique[:, 2] = 0
            for u in range(self.num_uniquebodyparts):
                dets = joints.get(num_parts + u)
                # The most confident (first in raster order among equals): slot 0.
                if dets and dets[0].score > self.pcutoff:
                    unique[u] = dets[0].x, dets[0].y, dets[0].score
            if np.isnan(unique[:, 0]).all():
                unique = None

        if not any(label in joints for label in range(num_parts)):
            return [], unique
        if num_parts == 1:
            # DeepLabCut keeps every confident peak, in raster order (P caps them here).
            dets = sorted(joints.get(0, []), key=lambda j: j.idx)
            animals = []
            for joint in dets:
                if joint.score >= self.pcutoff:
                    animals.append(_Animal(1))
                    animals[-1].add_joint(joint)
            return animals, unique
        if self.num_animals == 1:
            animal = _Animal(num_parts)
            for label in range(num_parts):
                if joints.get(label):
                    animal.add_joint(joints[label][0])
            return [animal], unique

        links = self._best_links(joints, affinities)
        animals = self._build(links)
        animals = [a for a in animals if len(a) and not 0 < len(a.links) < self.min_n_links]
        if 0 < self.max_overlap < 1:
            animals = self._suppress_overlaps(animals)
        if len(animals) > self.num_animals:
            animals = sorted(animals, key=len, reverse=True)[: self.num_animals]
        return animals, unique

    def _best_links(self, joints: dict[int, list[_Joint]],
                    affinities: np.ndarray) -> list[_Link]:
        links = []
        for e, k in enumerate(self.edges_to_keep):
            s, t = self.graph[k]
            if s not in joints or t not in joints:
                continue
            # Peaks arrive most confident first, so the top num_animals are the first slots.
            keep_s = [n for n, j in enumerate(joints[s][: self.num_animals])
                      if j.score >= self.pcutoff]
            keep_t = [n for n, j in enumerate(joints[t][: self.num_animals])
                      if j.score >= self.pcutoff]
            aff = np.nan_to_num(affinities[e][np.ix_(keep_s, keep_t)], nan=0.0)
            rows, cols = linear_sum_assignment(aff, maximize=True)
            for r, c in zip(rows, cols):
                if aff[r, c] >= self.min_affinity:
                    links.append(_Link(joints[s][keep_s[r]], joints[t][keep_t[c]], aff[r, c]))
        return links

    def _grow(self, animal: _Animal, lookup: dict[int, dict[int, _Link]],
              assembled: set[int]) -> None:
        """Adds the strongest links touching the animal until it is complete or none is left."""
        heap: list = []
        seen: set[tuple[int, int]] = set()
        counter = itertools.count()

        def push(i: int) -> None:
            for j, link in lookup[i].items():
                if j in animal.joint_ids or link.idx in seen:
                    continue
                heapq.heappush(heap, (-link.affinity, next(counter), link))
                seen.add(link.idx)

        for idx in animal.joint_ids:
            push(idx)
        while heap and len(animal) < self.num_multibodyparts:
            _, _, link = heapq.heappop(heap)
            i, j = link.idx
            if i in animal.joint_ids:
                new = j
            elif j in animal.joint_ids:
                new = i
            else:
                continue
            if new in assembled:
                continue
            animal.add_link(link)
            push(new)

    def _build(self, links: list[_Link]) -> list[_Animal]:
        num_parts = self.num_multibodyparts
        lookup: dict[int, dict[int, _Link]] = defaultdict(dict)
        for link in links:
            i, j = link.idx
            lookup[i][j] = link
            lookup[j][i] = link

        animals: list[_Animal] = []
        assembled: set[int] = set()
        # Connected groups with exactly num_parts joints are unambiguous animals. Groups are
        # visited in order of first appearance of their joints in ``links`` (networkx's order).
        parent: dict[int, int] = {}

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for link in links:
            for i in link.idx:
                parent.setdefault(i, i)
            ri, rj = find(link.idx[0]), find(link.idx[1])
            if ri != rj:
                parent[rj] = ri
        groups: dict[int, list[int]] = {}
        for link in links:
            for i in link.idx:
                groups.setdefault(find(i), [])
                if i not in groups[find(i)]:
                    groups[find(i)].append(i)
        for root, members in groups.items():
            if len(members) != num_parts:
                continue
            animal = _Animal(num_parts)
            for link in links:
                i, j = link.idx
                # DeepLabCut matches links against the group's edges as sorted pairs, so a link
                # whose source joint has the larger index is left out (only possible for graph
                # edges listed from the higher bodypart to the lower).
                if find(i) == root and i < j and animal.add_link(link):
                    lookup[i].pop(j, None)
                    lookup[j].pop(i, None)
            assembled.update(animal.joint_ids)
            animals.append(animal)
        if len(animals) == self.num_animals:
            return animals

        for link in sorted(links, key=lambda x: x.affinity, reverse=True):
            if any(i in assembled for i in link.idx):
                continue
            animal = _Animal(num_parts)
            animal.add_link(link)
            self._grow(animal, lookup, assembled)
            for used in animal.links:
                i, j = used.idx
                lookup[i].pop(j, None)
                lookup[j].pop(i, None)
            assembled.update(animal.joint_ids)
            animals.append(animal)

        if len(animals) > self.num_animals:
            # Merge partial animals joined by a link that no animal used.
            owner = {i: a for a in animals if len(a) != num_parts for i in a.joint_ids}
            used = {id(link) for a in animals for link in a.links}
            for link in links:
                if id(link) in used:
                    continue
                i, j = link.idx
                if i not in owner or j not in owner:
                    continue
                keep, drop = owner[i], owner[j]
                if keep.shares_label(drop):  # also true when they are the same animal
                    continue
                merged = keep.merged(drop)
                keep.__dict__.update(merged.__dict__)
                animals = [a for a in animals if a is not drop]
                for idx in drop.joint_ids:
                    owner[idx] = keep

        # Second growth pass for the animals still incomplete.
        for animal in animals:
            if len(animal) != num_parts:
                self._grow(animal, lookup, assembled)
                assembled.update(animal.joint_ids)
        return animals

    def _suppress_overlaps(self, animals: list[_Animal]) -> list[_Animal]:
        """Greedy pose NMS by total affinity: drops animals overlapping a stronger one."""
        pending = list(animals)
        kept = []
        while pending:
            best = max(pending, key=lambda a: a.total_affinity)
            pending.remove(best)
            kept.append(best)
            pending = [a for a in pending if best.overlap(a) < self.max_overlap]
        return kept
