"""Stitching: join tracklets into ``n_tracks`` animals with a minimum-cost flow.

As DeepLabCut's ``TrackletStitcher`` (``refine_training_dataset/stitch.py``): tracklets are
cleaned (frames without keypoints dropped), split where frames are missing
(``split_tracklets``), and those shorter than ``min_length`` set aside as residuals. The rest
become a flow graph: each tracklet is a node pair ``in -> out``; ``out_i -> in_j`` links every
pair where j starts after i ends, at most ``max_gap`` frames later, with the integer cost
``int(100 * weight_func(i, j))``. Tracklets overlapping in time never get a link, so no track
ever holds two poses in one frame.

Where DeepLabCut demands that every tracklet be covered by exactly ``n_tracks`` paths (and falls
back to heuristics when that is infeasible), the flow here sends ``n_tracks`` units from the
source to the sink with three costs ranked so that none can buy the next: first cover as many
tracklet frames as possible (a reward per frame), then open as few tracks as possible (a cost
per track, so extra tracks stay empty when fewer animals are visible), then pay the least for
the joins. That one problem always has a solution, handles animals that leave and return (a
long gap is just a dearer link) and ``n_tracks`` larger than the animals visible. Tracklets the
flow cannot place join the residuals, which are attached afterwards to the track they fit best
(``add_back_residuals``), as DeepLabCut does.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from dlc_runtime.tracking.tracklets import Tracklet, join_all

WeightFunc = Callable[[Tracklet, Tracklet], float]

# DeepLabCut scales weights by 100 before rounding: networkx's flow solvers want integers.
_WEIGHT_SCALE = 100
# Residual pieces closer than this many frames are chained before being attached
# (DeepLabCut's `_prestitch_residuals(5)`).
_PRESTITCH_GAP = 5


@dataclass(frozen=True)
class EdgeCost:
    """The cost of making ``t2`` follow ``t1`` in one track; lower means more likely.

    The default is DeepLabCut's: the distance between t1's last and t2's first centroid,
    multiplied by ``identity_match`` (0.01) when both carry identity scores that name the same
    individual. The other terms are off by default.

    Args:
        distance: weight of the end-to-start centroid distance (pixels).
        motion: weight of the mean error of predicting each end from the other with its
            velocity across the gap (DeepLabCut's ``motion_affinity_with``).
        time_gap: cost per frame of gap.
        shape: weight of the mean distance between the centred keypoints of t1's last and
            t2's first pose (posture / size change, independent of position).
        identity_match: factor applied when both identities agree; ``identity_mismatch``
            when they disagree.
    """

    distance: float = 1.0
    motion: float = 0.0
    time_gap: float = 0.0
    shape: float = 0.0
    identity_match: float = 0.01
    identity_mismatch: float = 1.0

    def __call__(self, t1: Tracklet, t2: Tracklet) -> float:
        gap = t2.start - t1.end
        a, b = t1.centroid[-1], t2.centroid[0]
        cost = self.distance * _norm(b - a) + self.time_gap * gap
        if self.motion:
            ahead = a + gap * t1.velocity("end")
            behind = b - gap * t2.velocity("start")
            cost += self.motion * (_norm(b - ahead) + _norm(a - behind)) / 2
        if self.shape:
            d = np.linalg.norm(t2.shape_at("start") - t1.shape_at("end"), axis=1)
            cost += self.shape * (float(np.nanmean(d)) if np.isfinite(d).any() else 0.0)
        l1, l2 = t1.identity_label, t2.identity_label
        if l1 >= 0 and l2 >= 0:
            cost *= self.identity_match if l1 == l2 else self.identity_mismatch
        return cost


def _norm(v: np.ndarray) -> float:
    n = float(np.linalg.norm(v))
    return n if np.isfinite(n) else 0.0


@dataclass
class StitchResult:
    """What :func:`stitch_tracklets` found.

    Attributes:
        tracks: ``n_tracks`` entries, each the joined tracklet of one animal or None where no
            animal was found for it. Ordered by identity label when every track has one,
            otherwise by first frame; empty tracks last.
        paths: for each track, the tracklets (as stitched, before residuals) it is made of.
        residuals: tracklets placed in no track.
    """

    tracks: list[Tracklet | None]
    paths: list[list[Tracklet]]
    residuals: list[Tracklet] = field(default_factory=list)

    def to_array(self, n_frames: int | None = None) -> np.ndarray:
        """(n_frames, n_tracks, K, 3) poses, NaN where a track has none; ``n_frames`` defaults
        to one past the last frame of any track."""
        full = [t for t in self.tracks if t is not None]
        if not full:
            raise ValueError("no track holds any pose: nothing to lay out")
        last = max(t.end for t in full)
        n = last + 1 if n_frames is None else int(n_frames)
        if n <= last:
            raise ValueError(f"n_frames={n} but a track reaches frame {last}")
        k = full[0].keypoints.shape[1]
        out = np.full((n, len(self.tracks), k, 3), np.nan)
        for i, t in enumerate(self.tracks):
            if t is not None:
                out[t.frames, i] = t.keypoints
        return out


def prepare_tracklets(tracklets: Sequence[Tracklet], min_length: int = 10,
                      split_tracklets: bool = True) -> tuple[list[Tracklet], list[Tracklet]]:
    """DeepLabCut's clean-up: (tracklets to stitch, residuals shorter than ``min_length``)."""
    kept, residuals = [], []
    for t in tracklets:
        t = t.without_empty_frames()
        if not len(t):
            continue
        pieces = t.split_at_gaps() if split_tracklets and not t.is_continuous else [t]
        for p in pieces:
            (kept if len(p) >= min_length else residuals).append(p)
    return kept, residuals


def compute_max_gap(tracklets: Sequence[Tracklet]) -> int:
    """DeepLabCut's automatic gap: the largest, over tracklets, of the smallest positive gap
    between a tracklet and any other (before or after it)."""
    if len(tracklets) < 2:
        return 0
    starts = np.array([t.start for t in tracklets])
    ends = np.array([t.end for t in tracklets])
    gaps = np.maximum(starts[None, :] - ends[:, None], starts[:, None] - ends[None, :])
    gaps = np.where(gaps > 0, gaps, np.iinfo(np.int64).max).astype(np.int64)
    np.fill_diagonal(gaps, np.iinfo(np.int64).max)
    smallest = gaps.min(axis=1)
    smallest = smallest[smallest < np.iinfo(np.int64).max]
    return int(smallest.max()) if len(smallest) else 0


def stitch_tracklets(tracklets: Sequence[Tracklet], n_tracks: int, min_length: int = 10,
                     split_tracklets: bool = True, prestitch_residuals: bool = True,
                     max_gap: int | None = None, weight_func: WeightFunc | None = None,
                     add_back_residuals: bool = True) -> StitchResult:
    """Join tracklets into at most ``n_tracks`` animals.

    Args:
        tracklets: the tracker's tracklets (any order).
        n_tracks: the number of animals (tracks) to reconstruct.
        min_length: tracklets shorter than this (after splitting) are residuals: left out of
            the flow, attached afterwards. At least 3, as DeepLabCut requires.
        split_tracklets: cut tracklets where frames are missing (a tracker's id switch often
            leaves one); turn off when the tracker's re-identification is trusted.
        prestitch_residuals: chain residuals a few frames apart before attaching them.
        max_gap: the longest gap (frames) a link may bridge; None: 1.5 times
            :func:`compute_max_gap`, as DeepLabCut. Animals away longer than that are still
            placed: in a track of their own while one is free, otherwise as residuals.
        weight_func: ``(t1, t2) -> cost`` of t2 following t1 (lower is likelier, >= 0); None:
            :class:`EdgeCost` ``()``, DeepLabCut's distance with its identity factor.
        add_back_residuals: attach residuals to the track they fit (no overlap, nearest).

    Returns:
        A :class:`StitchResult`.
    """
    if int(n_tracks) < 1:
        raise ValueError(f"n_tracks must be at least 1 (the number of animals), got {n_tracks}")
    if min_length < 3:
        raise ValueError(f"min_length must be at least 3 frames (DeepLabCut's minimum), "
                         f"got {min_length}")
    weight_func = weight_func or EdgeCost()
    nodes, residuals = prepare_tracklets(tracklets, min_length, split_tracklets)
    if not nodes:
        raise ValueError(f"no tracklet is {min_length} frames long or more: nothing to stitch; "
                         f"lower min_length or check the tracker's output")
    if prestitch_residuals:
        residuals = _prestitch(residuals)
    nodes.sort(key=lambda t: (t.start, t.end))
    if max_gap is None:
        max_gap = int(1.5 * compute_max_gap(nodes))
    paths, unplaced = _solve_flow(nodes, int(n_tracks), max_gap, weight_func)
    residuals = residuals + unplaced

    tracks = [join_all(p, id=i) for i, p in enumerate(paths)]
    if add_back_residuals and tracks:
        residuals = _attach_residuals(tracks, residuals)
    order = _track_order(tracks)
    tracks = [tracks[i] for i in order]
    paths = [paths[i] for i in order]
    tracks = [Tracklet(i, t.frames, t.keypoints, t.identity) for i, t in enumerate(tracks)]
    n_empty = int(n_tracks) - len(tracks)
    return StitchResult(tracks=tracks + [None] * n_empty, paths=paths + [[]] * n_empty,
                        residuals=residuals)


def _solve_flow(nodes: list[Tracklet], n_tracks: int, max_gap: float,
                weight_func: WeightFunc) -> tuple[list[list[Tracklet]], list[Tracklet]]:
    """The min-cost flow over ``nodes`` (sorted by start): paths of tracklets, and the
    tracklets no path covers."""
    import networkx as nx

    links = []
    for i, a in enumerate(nodes):
        for j in range(i + 1, len(nodes)):
            b = nodes[j]
            gap = b.start - a.end
            if gap > max_gap:
                break  # nodes are sorted by start: every later one starts later still
            if gap > 0:
                w = float(weight_func(a, b))
                if not np.isfinite(w) or w < 0:
                    raise ValueError(f"weight_func returned {w} for {a!r} -> {b!r}; it must be "
                                     f"a finite cost >= 0")
                links.append((i, j, int(_WEIGHT_SCALE * w)))

    # Lexicographic costs in integers: no sum of cheaper terms can outweigh one dearer unit.
    join_bound = sum(w for _, _, w in links) + 1
    open_cost = join_bound
    frame_reward = open_cost * (n_tracks + 1)

    g = nx.DiGraph()
    g.add_node("source", demand=-n_tracks)
    g.add_node("sink", demand=n_tracks)
    g.add_edge("source", "sink", capacity=n_tracks, weight=0)  # unused tracks
    for i, t in enumerate(nodes):
        g.add_edge("source", ("in", i), capacity=1, weight=open_cost)
        g.add_edge(("in", i), ("out", i), capacity=1, weight=-frame_reward * len(t))
        g.add_edge(("out", i), "sink", capacity=1, weight=0)
    for i, j, w in links:
        g.add_edge(("out", i), ("in", j), capacity=1, weight=w)
    flow = nx.min_cost_flow(g)

    successor = {}
    for i in range(len(nodes)):
        for dest, f in flow[("out", i)].items():
            if f and dest != "sink":
                successor[i] = dest[1]
    paths, covered = [], set()
    for dest, f in flow["source"].items():
        if f and dest != "sink":
            path, i = [], dest[1]
            while i is not None:
                path.append(nodes[i])
                covered.add(i)
                i = successor.get(i)
            paths.append(path)
    unplaced = [t for i, t in enumerate(nodes) if i not in covered]
    return paths, unplaced


def _prestitch(residuals: list[Tracklet]) -> list[Tracklet]:
    """Chain residuals that follow one another within a few frames, nearest end first."""
    chains: list[Tracklet] = []
    for r in sorted(residuals, key=lambda t: t.start):
        best, best_d = None, np.inf
        for k, c in enumerate(chains):
            if 0 < r.start - c.end < _PRESTITCH_GAP:
                d = _norm(r.centroid[0] - c.centroid[-1])
                if d < best_d:
                    best, best_d = k, d
        if best is None:
            chains.append(r)
        else:
            chains[best] = chains[best].join(r)
    return chains


def _attach_residuals(tracks: list[Tracklet], residuals: list[Tracklet]) -> list[Tracklet]:
    """Put each residual (longest first) into the non-overlapping track whose poses next to
    it are nearest; return those that fit nowhere."""
    left = []
    for r in sorted(residuals, key=len, reverse=True):
        best, best_d = None, np.inf
        for k, t in enumerate(tracks):
            if t.overlaps(r):
                continue
            d = _neighbour_distance(t, r)
            if d < best_d:
                best, best_d = k, d
        if best is None:
            left.append(r)
        else:
            tracks[best] = tracks[best].join(r)
    return left


def _neighbour_distance(track: Tracklet, r: Tracklet) -> float:
    """Distance from ``r``'s ends to the track's poses just before and after it, plus a small
    cost per frame of gap so that, at equal distance, the nearer in time wins."""
    e = int(np.searchsorted(track.frames, r.start))
    d, n = 0.0, 0
    if e > 0:
        d += _norm(r.centroid[0] - track.centroid[e - 1]) + (r.start - track.frames[e - 1]) * 1e-3
        n += 1
    if e < len(track):
        d += _norm(track.centroid[e] - r.centroid[-1]) + (track.frames[e] - r.end) * 1e-3
        n += 1
    return d / n if n else np.inf


def _track_order(tracks: list[Tracklet]) -> list[int]:
    labels = [t.identity_label for t in tracks]
    if tracks and all(lab >= 0 for lab in labels) and len(set(labels)) == len(labels):
        return sorted(range(len(tracks)), key=lambda i: labels[i])
    return sorted(range(len(tracks)), key=lambda i: tracks[i].start)
