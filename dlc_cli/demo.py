"""``dlc demo``: the whole path on an embedded synthetic default, on CPU, in about 3 minutes.

generate a synthetic DeepLabCut project -> train a small model -> export an ONNX bundle (with its
parity check) -> analyze the synthetic video with the lean runtime -> error vs ground truth.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dlc_io import check_replaceable

MARKER = ".dlc-demo"
# The demo's model: the smallest member of the ResNet family (see backbones/resnet.py), which
# trains from scratch on 2 CPU cores within the demo's time budget. Same head and layout as
# DeepLabCut's resnet_50.
DEMO_NET_TYPE = "resnet_tiny"
DEMO_EPOCHS = 60
DEMO_BATCH_SIZE = 8


@dataclass
class DemoResult:
    median_error_px: float
    p90_error_px: float
    analysis_fps: float
    frames: int
    parity_max_px: float
    seconds: dict
    h5_path: str
    bundle_dir: str


def demo_training_overrides(epochs: int) -> dict:
    """Augmentation and schedule for the synthetic frames (smaller than DeepLabCut's 448 crop)."""
    return {
        "data.train.crop_sampling": None,
        "data.train.affine": {"p": 0.5, "rotation": 30, "scaling": [0.85, 1.15],
                              "translation": 8},
        "data.train.motion_blur": False,
        "data.train.gaussian_noise": 6.0,
        "runner.optimizer": {"type": "AdamW", "params": {"lr": 2e-3}},
        "runner.scheduler": {"type": "LRListScheduler",
                             "params": {"lr_list": [[5e-4], [1e-4]],
                                        "milestones": [int(epochs * 0.7), int(epochs * 0.9)]}},
        "runner.eval_interval": epochs,
        "runner.snapshots": {"max_snapshots": 1, "save_epochs": epochs,
                             "save_optimizer_state": False},
        "train_settings.display_iters": 10_000,
    }


def _prepare(output: Path, overwrite: bool) -> None:
    """Makes ``output`` a fresh demo folder. An earlier demo there is removed only with
    ``overwrite``; any other folder or file is refused (see :func:`dlc_io.check_replaceable`)."""
    check_replaceable(output, what="dlc demo folder", overwrite=overwrite,
                      is_ours=lambda folder: (folder / MARKER).is_file())
    if output.exists():
        # Not staged like a bundle: the project inside records its own absolute path.
        shutil.rmtree(output)
    output.mkdir(parents=True)
    (output / MARKER).write_text("written by `dlc demo`; safe to delete\n")


def keypoint_errors_vs_truth(h5_path: Path, truth: np.ndarray) -> np.ndarray:
    """Pixel errors of the analysed video against ground truth (NaN truth ignored)."""
    import pandas as pd

    df = pd.read_hdf(h5_path, "df_with_missing")
    pred = df.to_numpy(dtype=np.float64).reshape(len(df), truth.shape[1], truth.shape[2], 3)
    n = min(len(pred), len(truth))
    errors = np.linalg.norm(pred[:n, ..., :2] - truth[:n], axis=-1)
    return errors[np.isfinite(errors)]


def run_demo(output: str | Path = "dlc-demo", seed: int = 0, epochs: int | None = None,
             echo: Callable[[str], None] = print, net_type: str = DEMO_NET_TYPE,
             overwrite: bool = False, spec=None) -> DemoResult:
    """Runs the demo in ``output`` (new, empty, or an earlier demo replaced with ``overwrite``).

    ``spec`` (a ``SyntheticSpec``) replaces the default project (tests use a smaller one to run
    the same path in seconds); ``seed`` is ignored then.
    """
    from dlc_export import export_from_project
    from dlc_runtime import analyze_video
    from dlc_train.apis import train_network
    from dlc_train.synthetic import SyntheticSpec, generate_project, load_ground_truth

    output = Path(output)
    epochs = epochs or DEMO_EPOCHS
    seconds: dict[str, float] = {}
    _prepare(output, overwrite)

    t = time.perf_counter()
    spec = spec or SyntheticSpec(seed=seed)
    project = generate_project(output / "project", spec)
    seconds["generate"] = time.perf_counter() - t
    echo(f"[1/4] synthetic project: {spec.num_labeled_frames} labeled frames, "
         f"{spec.num_video_frames}-frame video ({seconds['generate']:.1f} s)")

    t = time.perf_counter()
    train_network(project.config_path, shuffle=1, net_type=net_type, epochs=epochs,
                  batch_size=DEMO_BATCH_SIZE, device="cpu",
                  pytorch_config_overrides=demo_training_overrides(epochs),
                  # 60 per-epoch lines would bury the demo's four step lines.
                  progress=False)
    seconds["train"] = time.perf_counter() - t
    echo(f"[2/4] trained {net_type} for {epochs} epochs ({seconds['train']:.1f} s)")

    t = time.perf_counter()
    exported = export_from_project(project.config_path, shuffle=1)
    seconds["export"] = time.perf_counter() - t
    echo(f"[3/4] {exported.parity.summary()} ({seconds['export']:.1f} s)")

    t = time.perf_counter()
    analysis = analyze_video(exported.bundle_dir, project.video_path,
                             dest_folder=output / "results", batch_size=8, progress=True)
    seconds["analyze"] = time.perf_counter() - t
    errors = keypoint_errors_vs_truth(analysis.h5_path, load_ground_truth(
        project.ground_truth_path))
    result = DemoResult(
        median_error_px=float(np.median(errors)), p90_error_px=float(np.percentile(errors, 90)),
        analysis_fps=float(analysis.fps), frames=int(analysis.n_frames),
        parity_max_px=float(exported.parity.max_px),
        seconds={k: round(v, 2) for k, v in seconds.items()}, h5_path=str(analysis.h5_path),
        bundle_dir=str(exported.bundle_dir))
    (output / "demo_summary.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    echo(f"[4/4] analyzed {result.frames} frames at {result.analysis_fps:.1f} frames/s "
         f"-> {analysis.h5_path}")
    echo(f"median keypoint error vs ground truth: {result.median_error_px:.2f} px "
         f"(90th percentile {result.p90_error_px:.2f} px); total "
         f"{sum(seconds.values()):.0f} s")
    return result
