"""The parameters of a synthetic project: one frozen dataclass, validated on creation."""
from __future__ import annotations

from dataclasses import dataclass

BODYPARTS: tuple[str, ...] = ("snout", "leftear", "rightear", "tailbase", "tailtip")
SKELETON: list[list[str]] = [
    ["snout", "leftear"], ["snout", "rightear"], ["leftear", "tailbase"],
    ["rightear", "tailbase"], ["tailbase", "tailtip"],
]

VIDEO_MOTIONS = ("random", "tracking")
# The scripted tracking scenario: its animals, and the frames it needs to show every event.
SCENARIO_ANIMALS = 3
SCENARIO_MIN_FRAMES = 60


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. Everything is deterministic given these fields.

    Args:
        seed: seeds every random stream (background, labeled frames, video motion, video noise).
        width, height: frame size in pixels (labeled frames and video).
        num_labeled_frames: independent random poses written to ``labeled-data/<video_stem>/``.
        num_video_frames: frames of the smooth trajectory written to ``videos/<video_stem>.mp4``.
        fps: video frame rate; motion is specified per second, so it looks the same at any fps.
        num_animals: animals per frame; above 1 the project is a multi-animal DeepLabCut project
            (individuals ``mouse1..N``, 4 header rows scorer/individuals/bodyparts/coords).
        body_length: snout-to-tailbase length as a fraction of the frame width (before the
            per-animal +-15 % scale); the tail adds another 0.7 of that.
        task, scorer, date: DeepLabCut project naming; the folder is ``{task}-{scorer}-{date}``.
            The date is fixed (not today) so that the output is reproducible.
        video_stem: name of the video and of its ``labeled-data`` folder.
        net_type: ``default_net_type`` written into config.yaml.
        video_motion: how the video's animals move: "random" (independent random walks that
            keep the animals apart) or "tracking" (the scripted three-animal scenario of
            :mod:`~dlc_train.synthetic.scenario`: crossing, touching, leaving the frame,
            occluding; needs ``num_animals=3`` and 60 video frames or more). With "tracking"
            the labeled frames are crowded too (:mod:`~dlc_train.synthetic.crowded`).
    """

    seed: int = 0
    width: int = 256
    height: int = 192
    num_labeled_frames: int = 120
    num_video_frames: int = 300
    fps: int = 30
    num_animals: int = 1
    body_length: float = 0.25
    task: str = "synthetic"
    scorer: str = "synth"
    date: str = "2024-01-01"
    video_stem: str = "synthmouse"
    net_type: str = "resnet_50"
    video_motion: str = "random"

    def __post_init__(self) -> None:
        if self.width < 32 or self.height < 32:
            raise ValueError(f"frame size {self.width}x{self.height} is too small (min 32x32)")
        if self.num_labeled_frames < 1 or self.num_video_frames < 1:
            raise ValueError("num_labeled_frames and num_video_frames must be >= 1")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not 1 <= self.num_animals <= 6:
            raise ValueError(f"num_animals must be between 1 and 6, got {self.num_animals}")
        if not 0.05 <= self.body_length <= 0.5:
            raise ValueError(f"body_length must be in [0.05, 0.5] of the width, got {self.body_length}")
        if self.num_animals > 1:
            # Animals need room: their summed footprint must stay well below the frame area.
            footprint = self.num_animals * (1.6 * self.body_length * self.width) ** 2
            if footprint > 0.6 * self.width * self.height:
                raise ValueError(f"{self.num_animals} animals of body_length {self.body_length} do "
                                 f"not fit in {self.width}x{self.height}; use a larger frame")
        if self.video_motion not in VIDEO_MOTIONS:
            raise ValueError(f"video_motion must be one of {', '.join(VIDEO_MOTIONS)}, got "
                             f"{self.video_motion!r}")
        if self.video_motion == "tracking" and self.num_animals != SCENARIO_ANIMALS:
            raise ValueError(f"video_motion 'tracking' scripts {SCENARIO_ANIMALS} animals; "
                             f"num_animals is {self.num_animals}")
        if self.video_motion == "tracking" and self.num_video_frames < SCENARIO_MIN_FRAMES:
            raise ValueError(f"video_motion 'tracking' needs num_video_frames >= "
                             f"{SCENARIO_MIN_FRAMES}, got {self.num_video_frames}")
        for name in ("task", "scorer", "video_stem"):
            value = getattr(self, name)
            if not value or any(c in value for c in "/\\ -"):
                raise ValueError(f"{name} must be non-empty without '/', '\\', ' ' or '-': {value!r}")

    @property
    def multianimal(self) -> bool:
        return self.num_animals > 1

    @property
    def individuals(self) -> list[str]:
        """Individual names; single-animal projects have none in their files."""
        return [f"mouse{i + 1}" for i in range(self.num_animals)]

    @property
    def length_px(self) -> float:
        """Nominal snout-to-tailbase length in pixels."""
        return self.body_length * self.width
