"""What to track with: the tracker and its parameters, the stitching, the names of the animals.

Defaults are DeepLabCut's: the tracker parameters of a project's ``inference_cfg.yaml``
(``max_age`` 100, ``min_hits`` 3, ``iou_threshold`` 0.2, ``boundingboxslack`` 0) and the
stitching defaults of its ``stitch_tracklets`` (``min_length`` 10, automatic ``max_gap``,
tracklets split at gaps, residuals pre-stitched).
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from dlc_runtime.errors import TrackingError
from dlc_runtime.tracking.trackers import TRACKERS

#: DeepLabCut's ``inference_cfg.yaml`` tracker values, under our parameter names.
DLC_TRACKER_DEFAULTS: dict[str, Any] = {"max_age": 100, "min_hits": 3, "iou_threshold": 0.2,
                                        "slack": 0.0}
#: DeepLabCut's names for our tracker parameters.
DLC_NAMES = {"boundingboxslack": "slack"}


def tracker_parameters(method: str) -> list[str]:
    """The keyword parameters the ``method`` tracker takes."""
    if method not in TRACKERS:
        raise TrackingError(f"unknown track method {method!r}; use one of {', '.join(TRACKERS)}")
    names = []
    for cls in TRACKERS[method].__mro__:
        if cls is object or "__init__" not in vars(cls):
            continue
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD:
                if p.name not in ("self", "tracklets", "start_frame") and p.name not in names:
                    names.append(p.name)
    return names


@dataclass(frozen=True)
class TrackingOptions:
    """How a video's animals are tracked and stitched.

    Args:
        method: "ellipse" (DeepLabCut's default), "box" or "skeleton".
        n_animals: tracks to stitch into (DeepLabCut's ``n_tracks``); None: the bundle's
            number of individuals.
        tracker: tracker parameters overriding DeepLabCut's defaults (``max_age``,
            ``min_hits``, ``iou_threshold``, ``slack``/``boundingboxslack``, ``sd``,
            ``oks_threshold``: those the method takes).
        min_length, max_gap, split_tracklets, prestitch_residuals: stitching, as
            :func:`~dlc_runtime.tracking.stitch.stitch_tracklets`.
        animal_names: names of the tracks' column blocks; default the bundle's individuals,
            then ``ind<k>`` for tracks beyond them.
        identity_only: the model's identity head alone decides who is who (each animal slot
            is one individual; no tracker, no stitching). Needs a bundle with identity.
    """

    method: str = "ellipse"
    n_animals: int | None = None
    tracker: Mapping[str, Any] = field(default_factory=dict)
    min_length: int = 10
    max_gap: int | None = None
    split_tracklets: bool = True
    prestitch_residuals: bool = True
    animal_names: tuple[str, ...] | None = None
    identity_only: bool = False

    def __post_init__(self) -> None:
        accepted = tracker_parameters(self.method)
        renamed = {DLC_NAMES.get(k, k): v for k, v in dict(self.tracker).items()}
        unknown = sorted(set(renamed) - set(accepted))
        if unknown:
            raise TrackingError(f"the {self.method} tracker has no parameter "
                             f"{', '.join(unknown)}; it takes {', '.join(accepted)}")
        object.__setattr__(self, "tracker", renamed)
        if self.n_animals is not None and (int(self.n_animals) != self.n_animals
                                           or self.n_animals < 1):
            raise TrackingError(f"n_animals must be a whole number >= 1, got {self.n_animals!r}")
        if int(self.min_length) != self.min_length or self.min_length < 3:
            raise TrackingError(f"min_length must be a whole number of frames >= 3 (DeepLabCut's "
                             f"minimum), got {self.min_length!r}")
        if self.max_gap is not None and (int(self.max_gap) != self.max_gap or self.max_gap < 1):
            raise TrackingError(f"max_gap must be a whole number of frames >= 1, got "
                             f"{self.max_gap!r}")
        if self.animal_names is not None:
            names = tuple(str(n) for n in self.animal_names)
            if len(set(names)) != len(names) or not all(names):
                raise TrackingError(f"animal_names must be distinct, non-empty names, got "
                                 f"{list(names)}")
            object.__setattr__(self, "animal_names", names)

    def tracker_params(self) -> dict[str, Any]:
        """DeepLabCut's defaults for what this method takes, then the overrides."""
        accepted = tracker_parameters(self.method)
        params = {k: v for k, v in DLC_TRACKER_DEFAULTS.items() if k in accepted}
        params.update(self.tracker)
        return params

    def names(self, individuals: Sequence[str], n_tracks: int) -> list[str]:
        """The ``n_tracks`` column-block names."""
        given = list(self.animal_names or individuals)[:n_tracks]
        taken = set(given)
        k = 1
        while len(given) < n_tracks:
            if f"ind{k}" not in taken:
                given.append(f"ind{k}")
            k += 1
        return given

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["tracker"] = dict(self.tracker_params())
        out["animal_names"] = list(self.animal_names) if self.animal_names else None
        return out

    @classmethod
    def from_settings(cls, method: str = "ellipse", n_animals: int | None = None,
                      settings: Mapping[str, Any] | None = None) -> TrackingOptions:
        """Options from flat ``key=value`` settings (the CLI's ``--track-option``): stitching
        fields by name, anything else a tracker parameter."""
        own = {f.name for f in fields(cls)} - {"method", "n_animals", "tracker"}
        settings = dict(settings or {})
        kwargs = {k: settings.pop(k) for k in list(settings) if k in own}
        if isinstance(kwargs.get("animal_names"), str):
            kwargs["animal_names"] = tuple(kwargs["animal_names"].split(","))
        return cls(method=method, n_animals=n_animals, tracker=settings, **kwargs)
