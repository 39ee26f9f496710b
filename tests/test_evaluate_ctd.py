"""`dlc evaluate` on conditional top-down shuffles: the bottom-up model named by
``inference.conditions`` gives the conditions, and the evaluated predictions are what the
exported CTD bundle finds on the same images; a CTD shuffle whose conditions model is not named
or not trained is refused with one line before anything is written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dlc_train.apis import evaluate_network
from dlc_train.config import make_pytorch_pose_config, read_config_as_dict, write_config
from dlc_train.data.dlcloader import DLCLoader
from helpers.cli import invoke, one_error_line
from test_export_ctd import ctd_bundle, ctd_project  # noqa: F401  (module fixtures used here)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_ctd_evaluation_is_what_its_bundle_finds(ctd_project, ctd_bundle,  # noqa: F811
                                                 tmp_path):
    from dlc_runtime.deeplabcut_api import analyze_images

    proj, trains = ctd_project
    result = evaluate_network(proj.config_path, shuffles=[2], show_errors=False)[0]
    assert result.snapshot == trains[2] / "snapshot-005.pt"
    assert result.scorer.endswith("shuffle2_snapshot_5") and "detector" not in result.scorer
    assert result.scores["Detector epochs (TD only)"] == -1
    df = pd.read_hdf(result.files["predictions"])
    individuals = list(df.columns.get_level_values("individuals").unique())
    bodyparts = list(df.columns.get_level_values("bodyparts").unique())
    evaluated = df.to_numpy().reshape(len(df), len(individuals), len(bodyparts), 3)
    paths = [str(proj.project_dir / Path(*index)) for index in df.index]
    assert np.isfinite(evaluated[..., 0]).any()  # the conditions model found animals

    found = analyze_images(ctd_bundle.bundle_dir, paths, output_dir=tmp_path,
                           progress_bar=False)
    for path, want in zip(paths, evaluated):
        got = found[path]["bodyparts"]
        assert got.shape == want.shape
        # The same animals in the same slots (the bundle marks an empty slot NaN too).
        assert (np.isnan(got[..., 0]) == np.isnan(want[..., 0])).all()
        seen = ~np.isnan(want[..., 0])
        np.testing.assert_allclose(got[seen][:, :2], want[seen][:, :2], atol=0.01)
        np.testing.assert_allclose(got[seen][:, 2], want[seen][:, 2], atol=1e-3)


def test_ctd_without_a_named_or_trained_conditions_model(tmp_path):
    from dlc_train.synthetic import SyntheticSpec, generate_project

    proj = generate_project(tmp_path, SyntheticSpec(num_animals=2, num_labeled_frames=2,
                                                    num_video_frames=1, width=96, height=64))
    project_cfg = dict(read_config_as_dict(proj.config_path), project_path=str(proj.project_dir))
    loader = DLCLoader(proj.config_path, shuffle=2)  # its split, as dlc train makes it
    folder = loader.train_folder
    folder.mkdir(parents=True)
    cfg = make_pytorch_pose_config(project_cfg, loader.pose_config_path, "ctd_prenet_rtmpose_s")
    write_config(loader.pose_config_path, cfg)
    torch.save({"metadata": {"epoch": 1}, "model": {}}, folder / "snapshot-001.pt")
    results = proj.project_dir / "evaluation-results-pytorch"

    one_error_line(invoke(["evaluate", proj.config_path, "--shuffle", "2"]),
                   "inference.conditions is not set", "{shuffle: N}")
    cfg["inference"]["conditions"] = {"shuffle": 1}  # named, never trained
    write_config(loader.pose_config_path, cfg)
    one_error_line(invoke(["evaluate", proj.config_path, "--shuffle", "2"]),
                   "the conditions shuffle 1 is not trained")
    cfg["inference"]["conditions"] = "predictions.h5"
    write_config(loader.pose_config_path, cfg)
    one_error_line(invoke(["evaluate", proj.config_path, "--shuffle", "2"]),
                   "inference.conditions is a predictions file (predictions.h5)")
    assert not results.exists()
