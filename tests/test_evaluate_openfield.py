"""evaluate_network on the real openfield project (DeepLabCut's example: 116 labeled 640x480
frames, pcutoff 0.4) with a model trained here: DeepLabCut 3's folder, scorer, columns and
split sizes, and numbers that agree with the training runner's own evaluation and with a
recomputation from the written .h5. The fast test uses the first 12 labeled frames; the slow
one the whole project (DeepLabCut's 110 / 6 split). Skips when ../shared is absent."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import OPENFIELD, require
from dlc_train.apis import evaluate_network, train_network
from dlc_train.data.project import load_labels, load_project
from dlc_train.evaluation import compute_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

EVAL = "evaluation-results-pytorch/iteration-0/openfieldOct30-trainset95shuffle1"
OVERRIDES = {"data.train.crop_sampling": {"width": 128, "height": 128, "max_shift": 0.1,
                                          "method": "hybrid"},
             "runner.eval_interval": 1, "runner.snapshots.save_epochs": 1}


def openfield_project(dest: Path, frames: int | None) -> Path:
    """A copy of openfield without its video, labels cut to the first ``frames``; its config."""
    project = dest / "openfield-Pranav-2018-10-30"
    shutil.copytree(require(OPENFIELD), project, ignore=shutil.ignore_patterns("videos"))
    if frames is not None:
        labels = project / "labeled-data" / "m4s1" / "CollectedData_Pranav.h5"
        df = pd.read_hdf(labels).iloc[:frames]
        df.to_hdf(labels, key="df_with_missing", mode="w")
        df.to_csv(labels.with_suffix(".csv"))
    return project / "config.yaml"


def evaluate_and_check(config: Path, n_train: int, n_test: int, epochs: int = 1):
    torch.manual_seed(0)
    train_network(config, net_type="resnet_tiny", epochs=epochs, batch_size=4, device="cpu",
                  progress=False, pytorch_config_overrides=OVERRIDES)
    result = evaluate_network(config, shuffles=[1], show_errors=False, batch_size=2)[0]
    project = config.parent
    assert result.folder == project / EVAL
    assert result.scorer.startswith("DLC_ResnetTiny_openfieldOct30shuffle1_snapshot_best-")
    row = pd.read_csv(result.files["results"]).iloc[0]
    assert (row["%Training dataset"], row["Shuffle number"], row["pcutoff"]) == (0.95, 1, 0.4)
    assert result.scorer.endswith(f"snapshot_best-{int(row['Training epochs'])}")

    split = yaml.safe_load(next((project / "training-datasets").rglob(
        "Documentation_data-openfield_95shuffle1.yaml")).read_text())
    assert (len(split["train_images"]), len(split["test_images"])) == (n_train, n_test)

    # The runner evaluated the same test frames after the same epoch: same numbers.
    snap = torch.load(result.snapshot, weights_only=True)
    for name in ("rmse", "mAP"):
        assert snap["metadata"]["metrics"][f"metrics/test.{name}"] == pytest.approx(
            result.metrics["test"][name], rel=1e-5, abs=1e-6)

    df = pd.read_hdf(result.files["predictions"], key="df_with_missing")
    assert df.index.nlevels == 3 and len(df) == n_train + n_test
    assert list(df.columns.get_level_values("individuals").unique()) == ["animal"]
    labels = load_labels(load_project(config))
    row_of = {p: i for i, p in enumerate(labels.image_paths)}
    for name, images in (("train", split["train_images"]), ("test", split["test_images"])):
        poses = {p: df.loc[tuple(p.split("/"))].to_numpy().reshape(1, 4, 3) for p in images}
        gt = {p: labels.keypoints[row_of[p]] for p in images}
        again = compute_metrics(gt, poses, single_animal=True, pcutoff=0.4)
        assert again == pytest.approx(result.metrics[name], nan_ok=True)
    return result


def test_openfield_first_frames(tmp_path):
    evaluate_and_check(openfield_project(tmp_path, 12), n_train=11, n_test=1)


@pytest.mark.slow
def test_openfield_whole_project(tmp_path):
    result = evaluate_and_check(openfield_project(tmp_path, None), n_train=110, n_test=6,
                                epochs=5)
    # resnet_tiny from scratch, test RMSE: untrained 318 px. After 5 epochs the best snapshot
    # varies with the seed: 150-188 px for train_settings.seed 1-4 and 42 (167 px), measured
    # with the per-epoch reseeding of the runner; 62-304 px with the earlier seeding (the old
    # bound of 150 px held for seed 42 only). The bounds say that the model learned and that
    # evaluation reads its keypoints in the frames' pixels.
    assert result.metrics["test"]["rmse"] < 250
    assert result.metrics["train"]["mAP"] > 0
