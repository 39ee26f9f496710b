"""`dlc demo --multi-animal`: tracking scored against the scenario's known identities."""
from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from dlc_cli.main import cli
from dlc_train.synthetic import SyntheticSpec

# The same path on a small project and a few epochs: files and wiring, not accuracy.
QUICK_SPEC = dict(seed=0, num_animals=3, body_length=0.2, width=128, height=96,
                  num_labeled_frames=24, num_video_frames=60, video_motion="tracking")
QUICK_EPOCHS = 3


@pytest.fixture(scope="module")
def quick_multi_demo(tmp_path_factory):
    from dlc_cli.demo_multi import run_multi_animal_demo

    output = tmp_path_factory.mktemp("multi-demo") / "dlc-demo"
    lines: list[str] = []
    result = run_multi_animal_demo(output, epochs=QUICK_EPOCHS, echo=lines.append,
                                   spec=SyntheticSpec(**QUICK_SPEC))
    return output, result, lines


def test_multi_demo_writes_tracks_and_scores_them(quick_multi_demo):
    output, result, lines = quick_multi_demo
    tracks = pd.read_hdf(result.tracks_h5, "tracks")
    assert list(tracks.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert list(tracks.columns.get_level_values("individuals").unique()) == \
        ["mouse1", "mouse2", "mouse3"]
    assert result.frames == 60 and result.epochs == QUICK_EPOCHS
    summary = json.loads((output / "demo_summary.json").read_text())
    assert summary["tracker"] == "ellipse" and "ellipse" in summary["metrics"]
    for scores in summary["metrics"].values():
        assert scores["frames"] == 60 and scores["animals"] == 3
        assert {"idf1", "mota", "id_switches", "fragmentations"} <= set(scores)
        assert 0.0 <= scores["idf1"] <= 1.0 and scores["mota"] <= 1.0
    assert summary["events"]["out_of_frame_frames"] > 0
    assert lines[0].startswith("[1/6] synthetic project: 3 animals")
    # Evaluated as dlc evaluate does: OKS mAP of the test split printed and recorded.
    test = summary["evaluation"]["test"]
    assert 0.0 <= test["mAP"] <= 100.0 and 0.0 <= test["mAR"] <= 100.0
    assert any(line.startswith("[3/6] evaluated snapshot") and f"mAP {test['mAP']:.1f}" in line
               for line in lines)
    assert any(line.strip().startswith("ellipse  IDF1") for line in lines)


def test_tracker_needs_multi_animal(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--tracker", "box", "-o", str(tmp_path / "d")])
    assert result.exit_code == 1 and "--tracker needs --multi-animal" in result.output
    assert not (tmp_path / "d").exists()


def test_missing_motmetrics_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "motmetrics", None)   # as if not installed
    result = CliRunner().invoke(cli, ["demo", "--multi-animal", "-o", str(tmp_path / "d")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "Error: tracking metrics need motmetrics: pip install 'dlc-deploy[tracking-metrics]'")
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_multi_demo_tracks_the_scenario(tmp_path):
    """The real `dlc demo --multi-animal` (60 epochs, about 3 minutes on 2 cores). Measured
    (benchmarks/results/tracking_demo_*.json): the network finds ~82 % of the animal-frames
    (nearly all free animals; touching, covered and leaving ones are the misses); the ellipse
    tracks' IDF1 depends on the training draws: 0.860 (earlier seeding), 0.573 (CI, the
    per-epoch reseeding), 0.664 (pixel-index augmentation), MOTA 0.79-0.81, 2-6 identity
    switches; test mAP 50.0 (one run)."""
    from dlc_cli.demo_multi import run_multi_animal_demo

    result = run_multi_animal_demo(tmp_path / "dlc-demo", echo=lambda _: None)
    assert result.detections["recall"] >= 0.75 and result.detections["precision"] >= 0.95
    ellipse = result.metrics["ellipse"]
    assert ellipse["idf1"] >= 0.5 and ellipse["mota"] >= 0.7, ellipse
    assert ellipse["id_switches"] <= 10, ellipse
    assert result.evaluation["test"]["mAP"] >= 30, result.evaluation
    assert result.parity_max_px <= 0.5 and result.frames == 300
