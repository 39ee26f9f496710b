"""`--backend-option KEY=VALUE`, `--decoder` and the frame selection options of `dlc analyze`
and `dlc benchmark`."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd

import click
import pytest

from dlc_cli.options import parse_backend_options
from dlc_runtime import Bundle, make_backend
from dlc_runtime.errors import BackendError
from dlc_runtime.testing import make_test_video, make_toy_bundle
from helpers.cli import invoke, one_error_line


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("opts")
    return (make_toy_bundle(folder / "toy.bundle"),
            make_test_video(folder / "clip.mp4", n_frames=12))


def test_parse_backend_options_types():
    assert parse_backend_options(["cuda_graphs=false", "ring=4", "provider=tensorrt",
                                  "io-binding=True", "scale=0.5"]) == {
        "cuda_graphs": False, "ring": 4, "provider": "tensorrt", "io_binding": True,
        "scale": 0.5}
    for bad in ("ring", "=4", "two words=1"):
        with pytest.raises(click.BadParameter, match="KEY=VALUE"):
            parse_backend_options([bad])


def test_unknown_backend_option_is_one_line(toy):
    bundle, _ = toy
    with pytest.raises(BackendError, match=r"backend 'onnxruntime' has no option 'ring'; its "
                                           r"options: graph, intra_op_threads"):
        make_backend(Bundle.load(bundle), "onnxruntime", ring=3)


def test_analyze_passes_backend_options_and_records_the_decoder(toy, tmp_path):
    bundle, video = toy
    res = invoke(["analyze", bundle, video, "--dest", tmp_path, "--no-progress",
                  "--backend-option", "cpu_arena=false", "--backend-option",
                  "intra_op_threads=1", "--decoder", "cpu"])
    assert res.exit_code == 0, res.output
    meta = pickle.loads(next(tmp_path.glob("*_meta.pickle")).read_bytes())
    assert meta["data"]["dlc-deploy"]["decoder"] == "cpu (asked for with decoder='cpu')"
    res = invoke(["analyze", bundle, video, "--dest", tmp_path / "x", "--no-progress",
                  "--backend-option", "cuda_graphs=false"])
    one_error_line(res, "backend 'onnxruntime' has no option 'cuda_graphs'")
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").glob("*.h5"))


def test_analyze_auto_decoder_on_the_cpu_says_why(toy, tmp_path, caplog):
    bundle, video = toy
    caplog.set_level("INFO", logger="dlc_runtime.decoders")
    res = invoke(["analyze", bundle, video, "--dest", tmp_path, "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "decoder: cpu (the backend runs on 'cpu', not on a CUDA GPU)" in caplog.text


def test_benchmark_with_backend_options(toy, tmp_path):
    bundle, video = toy
    res = invoke(["benchmark", bundle, video, "--batch-size", "4", "--repeats", "1",
                  "--warmup", "1", "--no-plots", "--no-progress", "--out", tmp_path,
                  "--backend-option", "intra_op_threads=1", "--decoder", "cpu"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "benchmark.json").read_text().count("asked for with decoder='cpu'") == 1
    res = invoke(["benchmark", bundle, video, "--no-progress", "--out", tmp_path,
                  "--backend-option", "ring=2"])
    one_error_line(res, "has no option 'ring'")


def test_analyze_frame_selection_options(toy, tmp_path):
    bundle, video = toy
    res = invoke(["analyze", bundle, video, "--dest", tmp_path / "sel", "--no-progress",
                  "--start", "2", "--stop", "10", "--stride", "3"])
    assert res.exit_code == 0, res.output
    selected = pd.read_hdf(next((tmp_path / "sel").glob("*.h5")), "df_with_missing")
    assert list(selected.index) == [2, 5, 8]
    invoke(["analyze", bundle, video, "--dest", tmp_path / "all", "--no-progress"])
    full = pd.read_hdf(next((tmp_path / "all").glob("*.h5")), "df_with_missing")
    np.testing.assert_array_equal(selected.to_numpy(), full.loc[[2, 5, 8]].to_numpy())
    one_error_line(invoke(["analyze", bundle, video, "--dest", tmp_path / "bad",
                           "--no-progress", "--start", "soon"]), "soon")
