"""`dlc demo` end to end: accuracy against ground truth and the files a DeepLabCut user expects."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from dlc_cli.main import cli
from dlc_runtime import Bundle

# Measured 1.78 px median on 2 CPU cores (README); the bound leaves room for thread-order noise.
MEDIAN_ERROR_BOUND_PX = 4.0


@pytest.mark.slow
def test_demo_finds_the_synthetic_keypoints(demo_run):
    output, result = demo_run
    assert result.median_error_px < MEDIAN_ERROR_BOUND_PX
    assert result.p90_error_px < 3 * MEDIAN_ERROR_BOUND_PX
    assert result.frames == 300
    assert result.analysis_fps > 0
    assert result.parity_max_px <= 0.5
    summary = json.loads((output / "demo_summary.json").read_text())
    assert summary["median_error_px"] == pytest.approx(result.median_error_px)


def test_demo_writes_deeplabcut_outputs(quick_demo):
    output, result = quick_demo
    bundle = Bundle.load(result.bundle_dir)
    assert bundle.bodyparts == ["snout", "leftear", "rightear", "tailbase", "tailtip"]
    df = pd.read_hdf(result.h5_path, "df_with_missing")
    assert list(df.columns.names) == ["scorer", "bodyparts", "coords"]
    assert set(df.columns.get_level_values("coords")) == {"x", "y", "likelihood"}
    assert df.columns.get_level_values("scorer")[0] == bundle.scorer
    assert len(df) == result.frames == 60 and list(df.index[:3]) == [0, 1, 2]
    assert df.xs("likelihood", level="coords", axis=1).to_numpy().max() <= 1.0


def test_demo_refuses_to_clear_a_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["demo", "--output", str(tmp_path)])
    assert result.exit_code == 1
    assert "not written as a dlc demo folder" in result.output
    assert (tmp_path / "precious.txt").read_text() == "keep me"
