"""``dlc demo --multi-animal``: tracking measured against known identities, on CPU.

generate a three-animal synthetic project whose video is the tracking scenario (animals
crossing, touching, leaving the frame, one occluding another; see
:mod:`dlc_train.synthetic.scenario`) -> train a small multi-animal model (resnet_tiny with part
affinity fields) -> export an ONNX bundle -> analyze the video with tracking -> identity
switches, IDF1 and MOTA of the tracks against the ground truth (``motmetrics``), for the chosen
tracker and, re-tracked from the same analysis, the other two. The trained snapshot is also
evaluated as ``dlc evaluate`` does (RMSE, OKS mAP/mAR on the labeled frames' test split).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import click
import numpy as np

from dlc_cli.demo import DEMO_BATCH_SIZE, DEMO_NET_TYPE, _prepare, demo_training_overrides

# Chosen from epochs 30 / 60 / 90 on 2 CPU cores (benchmarks/results/tracking_demo_*.json).
MULTI_DEMO_EPOCHS = 60
MULTI_DEMO_ANIMALS = 3
TRACKERS = ("ellipse", "box", "skeleton")


def multi_demo_spec(seed: int = 0):
    """The demo's project: 3 animals (a fifth of the width long) in the tracking scenario."""
    from dlc_train.synthetic import SyntheticSpec

    return SyntheticSpec(seed=seed, num_animals=MULTI_DEMO_ANIMALS, body_length=0.2,
                         video_motion="tracking")


@dataclass
class MultiAnimalDemoResult:
    """What ``dlc demo --multi-animal`` measured (``metrics``: tracker -> TrackingMetrics
    fields; ``detections``: the analysis' animals scored per frame, identities aside;
    ``evaluation``: ``evaluate_network``'s train and test metrics of the snapshot)."""

    tracker: str
    metrics: dict
    detections: dict
    evaluation: dict
    events: dict
    epochs: int
    frames: int
    analysis_fps: float
    parity_max_px: float
    seconds: dict
    h5_path: str
    tracks_h5: str | None
    bundle_dir: str

    def summary(self) -> str:
        """The chosen tracker's scores, one line."""
        m = self.metrics.get(self.tracker)
        if m is None:
            return f"{self.tracker}: not stitched (too few long tracklets)"
        return (f"{self.tracker}: IDF1 {m['idf1']:.3f}, MOTA {m['mota']:.3f}, "
                f"{m['id_switches']} identity switches, {m['fragmentations']} fragmentations")


def _poses(df, n_frames: int, n_animals: int) -> np.ndarray:
    """(n_frames, animals, K, 3) from a multi-animal table indexed by frame (rows absent: NaN)."""
    df = df.reindex(range(n_frames))
    values = df.to_numpy(dtype=np.float64)
    return values.reshape(n_frames, n_animals, -1, 3)


def run_multi_animal_demo(output: str | Path = "dlc-demo", seed: int = 0,
                          epochs: int | None = None, echo: Callable[[str], None] = print,
                          overwrite: bool = False, tracker: str = "ellipse", spec=None
                          ) -> MultiAnimalDemoResult:
    """Runs the multi-animal demo in ``output`` (new, empty, or an earlier demo replaced with
    ``overwrite``) and writes ``demo_summary.json`` there.

    ``spec`` (a ``SyntheticSpec`` with ``video_motion="tracking"``) replaces the default project
    (tests use a smaller one); ``seed`` is ignored then. ``tracker`` is the one the analysis
    tracks with; the others are scored from the same analysis too.
    Raises click.ClickException before any work when motmetrics is missing or the tracker
    unknown.
    """
    from dlc_runtime.tracking.metrics import require_motmetrics

    if tracker not in TRACKERS:
        raise click.ClickException(f"unknown tracker {tracker!r}; use one of "
                                   f"{', '.join(TRACKERS)}")
    try:
        require_motmetrics()
    except ImportError as err:
        raise click.ClickException(str(err)) from None

    import pandas as pd

    from dlc_export import export_from_project
    from dlc_runtime import analyze_video
    from dlc_runtime.tracking import read_stitched_h5
    from dlc_runtime.tracking.metrics import tracking_metrics
    from dlc_runtime.tracking.options import TrackingOptions
    from dlc_runtime.tracking.track_results import track_h5
    from dlc_train.apis import evaluate_network, train_network
    from dlc_train.synthetic import generate_project, load_ground_truth
    from dlc_train.synthetic.scenario import scenario_events

    output = Path(output)
    epochs = epochs or MULTI_DEMO_EPOCHS
    spec = spec or multi_demo_spec(seed)
    if spec.video_motion != "tracking":
        raise click.ClickException("the multi-animal demo needs a spec with "
                                   "video_motion='tracking'")
    seconds: dict[str, float] = {}
    _prepare(output, overwrite)

    t = time.perf_counter()
    project = generate_project(output / "project", spec)
    events = scenario_events(spec).counts()
    seconds["generate"] = time.perf_counter() - t
    echo(f"[1/6] synthetic project: {spec.num_animals} animals, {spec.num_labeled_frames} "
         f"labeled frames, {spec.num_video_frames}-frame video with {events['crossings']} "
         f"path crossing(s), {events['touching_frames']} frames of animals touching, "
         f"{events['occluded_frames']} occluded, {events['out_of_frame_frames']} with an "
         f"animal out of the frame ({seconds['generate']:.1f} s)")

    t = time.perf_counter()
    train_network(project.config_path, shuffle=1, net_type=DEMO_NET_TYPE, epochs=epochs,
                  batch_size=DEMO_BATCH_SIZE, device="cpu",
                  pytorch_config_overrides=demo_training_overrides(epochs), progress=False)
    seconds["train"] = time.perf_counter() - t
    echo(f"[2/6] trained {DEMO_NET_TYPE} (part affinity fields) for {epochs} epochs "
         f"({seconds['train']:.1f} s)")

    t = time.perf_counter()
    evaluated = evaluate_network(project.config_path, shuffles=[1], device="cpu",
                                 show_errors=False)[0]
    seconds["evaluate"] = time.perf_counter() - t
    test = evaluated.metrics["test"]
    echo(f"[3/6] evaluated {evaluated.snapshot.name} on the test images: mAP {test['mAP']:.1f}, "
         f"mAR {test['mAR']:.1f}, RMSE {test['rmse']:.2f} px ({seconds['evaluate']:.1f} s)")

    t = time.perf_counter()
    exported = export_from_project(project.config_path, shuffle=1)
    seconds["export"] = time.perf_counter() - t
    echo(f"[4/6] {exported.parity.summary()} ({seconds['export']:.1f} s)")

    t = time.perf_counter()
    analysis = analyze_video(exported.bundle_dir, project.video_path,
                             dest_folder=output / "results", batch_size=8, progress=True,
                             track=tracker, n_animals=spec.num_animals)
    seconds["analyze"] = time.perf_counter() - t
    echo(f"[5/6] analyzed and tracked {analysis.n_frames} frames at {analysis.fps:.1f} "
         f"frames/s -> {analysis.tracks_h5 or analysis.tracking.summary()}")

    t = time.perf_counter()
    truth = load_ground_truth(project.ground_truth_path)
    n, a = truth.shape[:2]
    tracks_h5 = {tracker: analysis.tracks_h5}
    for other in TRACKERS:
        if other != tracker:
            tracks_h5[other] = track_h5(analysis.h5_path, TrackingOptions(
                method=other, n_animals=a)).tracks_h5
    metrics = {}   # a tracker whose tracklets were too short to stitch has no tracks
    for name, path in tracks_h5.items():
        if path is not None:
            metrics[name] = tracking_metrics(_poses(read_stitched_h5(path), n, a), truth)
    raw = _poses(pd.read_hdf(analysis.h5_path, "df_with_missing"), n, a)
    detections = tracking_metrics(raw, truth)
    seconds["metrics"] = time.perf_counter() - t
    echo(f"[6/6] tracks vs ground truth ({detections.max_distance_px:.1f} px reach); the "
         f"network found {detections.recall:.1%} of the animals, precision "
         f"{detections.precision:.1%}:")
    for name in TRACKERS:
        if name in metrics:
            echo(f"  {name:8s} {metrics[name].summary()}")
        else:
            echo(f"  {name:8s} not stitched (too few long tracklets)")

    result = MultiAnimalDemoResult(
        tracker=tracker, metrics={k: v.as_dict() for k, v in metrics.items()},
        detections={"recall": detections.recall, "precision": detections.precision,
                    "motp_px": detections.motp_px, "max_distance_px": detections.max_distance_px},
        evaluation={split: {k: float(v) for k, v in evaluated.metrics[split].items()
                            if k in ("rmse", "rmse_pcutoff", "mAP", "mAR")}
                    for split in ("train", "test")},
        events=events, epochs=int(epochs), frames=int(analysis.n_frames),
        analysis_fps=float(analysis.fps), parity_max_px=float(exported.parity.max_px),
        seconds={k: round(v, 2) for k, v in seconds.items()}, h5_path=str(analysis.h5_path),
        tracks_h5=str(analysis.tracks_h5) if analysis.tracks_h5 else None,
        bundle_dir=str(exported.bundle_dir))
    (output / "demo_summary.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    echo(f"total {sum(seconds.values()):.0f} s; summary -> {output / 'demo_summary.json'}")
    return result
