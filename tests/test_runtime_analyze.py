"""analyze_video end to end on a toy bundle: h5 layout and values, csv, meta, atomicity."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dlc_runtime import AnalysisResult, Backend, Bundle, analyze_video
from dlc_runtime.backends import BACKENDS, make_backend
from dlc_runtime.errors import BackendError, BundleError, VideoError
from dlc_runtime.outputs import H5Writer, make_columns
from dlc_runtime.testing import (TOY_SCORER, frame_color, make_test_video, make_toy_bundle,
                                 toy_keypoints)

N = 21  # not a multiple of the batch size: the last batch is short
BODYPARTS = ["snout", "tailbase"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_bundle(tmp_path_factory.mktemp("b") / "toy.bundle", bodyparts=BODYPARTS)


@pytest.fixture()
def video(tmp_path: Path) -> Path:
    return make_test_video(tmp_path / "m3v1.mp4", n_frames=N)


def _reference(video: Path) -> np.ndarray:
    """Toy-graph keypoints of every frame, decoded independently of VideoIterator."""
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    return toy_keypoints(np.stack(frames), len(BODYPARTS))


def test_h5_layout_and_values(bundle: Path, video: Path) -> None:
    res = analyze_video(bundle, video, batch_size=8, progress=False)
    assert isinstance(res, AnalysisResult) and not res.skipped
    expected_path = video.parent / f"m3v1{TOY_SCORER}.h5"
    assert res.h5_path == expected_path and Path(res) == expected_path  # __fspath__
    assert res.n_frames == N and res.fps > 0 and res.seconds > 0

    df = pd.read_hdf(res.h5_path, "df_with_missing")
    assert list(df.columns.names) == ["scorer", "bodyparts", "coords"]
    assert list(df.columns.get_level_values("scorer").unique()) == [TOY_SCORER]
    assert list(df.columns.get_level_values("bodyparts").unique()) == BODYPARTS
    assert list(df.columns.get_level_values("coords").unique()) == ["x", "y", "likelihood"]
    assert df.shape == (N, 6)
    np.testing.assert_array_equal(df.index.to_numpy(), np.arange(N))

    ref = _reference(video)[:, 0]  # (N, K, 3)
    np.testing.assert_allclose(df.to_numpy().reshape(N, 2, 3), ref, atol=1e-3)
    # Sanity against the colours we wrote: y is the red channel mean (so RGB order is right).
    red = np.array([frame_color(i)[0] for i in range(N)], np.float64)
    np.testing.assert_allclose(df[(TOY_SCORER, "snout", "y")].to_numpy(), red, atol=6)
    assert not list(video.parent.glob("*.part"))


def test_csv_and_meta(bundle: Path, video: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "nested"
    res = analyze_video(bundle, video, dest_folder=dest, batch_size=4, save_as_csv=True,
                        progress=False)
    assert res.h5_path.parent == dest
    assert res.csv_path == dest / f"m3v1{TOY_SCORER}.csv"
    df = pd.read_hdf(res.h5_path, "df_with_missing")
    assert res.csv_path.read_text() == df.to_csv()
    back = pd.read_csv(res.csv_path, header=[0, 1, 2], index_col=0)
    np.testing.assert_allclose(back.to_numpy(), df.to_numpy())

    assert res.meta_path == dest / f"m3v1{TOY_SCORER}_meta.pickle"
    with open(res.meta_path, "rb") as fh:
        meta = pickle.load(fh)
    data = meta["data"]
    for key in ("start", "stop", "run_duration", "Scorer", "pytorch-config", "fps", "batch_size",
                "frame_dimensions", "nframes", "cropping", "cropping_parameters", "bodyparts",
                "unique_bodyparts", "individuals"):
        assert key in data, key
    assert data["Scorer"] == TOY_SCORER and data["nframes"] == N and data["batch_size"] == 4
    assert data["fps"] == pytest.approx(10.0)
    assert data["frame_dimensions"] == (64, 48)  # DeepLabCut 3 stores (w, h)
    assert data["cropping"] is False and data["cropping_parameters"] == [0, 64, 0, 48]
    assert data["bodyparts"] == BODYPARTS and data["individuals"] == ["animal"]
    assert data["run_duration"] == pytest.approx(data["stop"] - data["start"])


def test_existing_result_is_skipped(bundle: Path, video: Path) -> None:
    first = analyze_video(bundle, video, progress=False)
    mtime = first.h5_path.stat().st_mtime_ns
    again = analyze_video(bundle, video, progress=False)
    assert again.skipped and again.h5_path == first.h5_path and again.n_frames == N
    assert first.h5_path.stat().st_mtime_ns == mtime
    redo = analyze_video(bundle, video, progress=False, overwrite=True)
    assert not redo.skipped and redo.n_frames == N


class _FailingBackend(Backend):
    """Wraps a real backend and raises on the 3rd batch."""

    name = "failing"

    def __init__(self, inner: Backend, fail_at: int = 3) -> None:
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("GPU fell off the bus")
        return self.inner.run(images)


def test_failure_mid_video_leaves_nothing(bundle: Path, video: Path) -> None:
    real = make_backend(Bundle.load(bundle))
    with pytest.raises(RuntimeError, match="fell off"):
        analyze_video(bundle, video, batch_size=4, backend=_FailingBackend(real),
                      progress=False)
    assert sorted(p.name for p in video.parent.iterdir()) == [video.name]


def test_failure_keeps_previous_result(bundle: Path, video: Path) -> None:
    good = analyze_video(bundle, video, batch_size=4, progress=False)
    before = good.h5_path.read_bytes()
    real = make_backend(Bundle.load(bundle))
    with pytest.raises(RuntimeError, match="fell off"):
        analyze_video(bundle, video, batch_size=4, backend=_FailingBackend(real),
                      progress=False, overwrite=True)
    assert good.h5_path.read_bytes() == before
    assert not list(video.parent.glob("*.part"))


def test_registered_backend_by_name(bundle: Path, video: Path) -> None:
    # The registry is the extension point: a new backend is a factory under a name.
    def factory(b: Bundle, device: str = "cpu") -> Backend:
        return _FailingBackend(make_backend(b, "onnxruntime", device), fail_at=-1)

    BACKENDS["test-wrapper"] = factory
    try:
        res = analyze_video(bundle, video, backend="test-wrapper", progress=False)
        assert res.n_frames == N
    finally:
        del BACKENDS["test-wrapper"]


def test_batch_padding_and_splitting(tmp_path: Path, video: Path) -> None:
    # min batch 2 (pad a last batch of 1), max batch 3 < batch_size 5 (split each batch).
    b = make_toy_bundle(tmp_path / "pad.bundle", bodyparts=BODYPARTS, batch=(2, 2, 3))
    res = analyze_video(b, video, batch_size=5, progress=False)
    df = pd.read_hdf(res.h5_path, "df_with_missing")
    np.testing.assert_allclose(df.to_numpy().reshape(N, 2, 3), _reference(video)[:, 0],
                               atol=1e-3)


def test_truncated_video_leaves_nothing_when_strict(bundle: Path, tmp_path: Path) -> None:
    # Without strict the frames that decode are analyzed (tests/test_analyze_damaged.py).
    full = make_test_video(tmp_path / "full.avi", n_frames=30, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 6 // 10])
    with pytest.raises(VideoError, match="truncated|cannot decode"):
        analyze_video(bundle, cut, progress=False, strict=True)
    assert not list(tmp_path.glob("cut*.h5*")) and not list(tmp_path.glob("*.part"))


def test_fixed_size_bundle_refuses_other_video_size(tmp_path: Path, video: Path) -> None:
    b = make_toy_bundle(tmp_path / "fixed.bundle", bodyparts=BODYPARTS, height=32, width=32)
    with pytest.raises(VideoError, match="64x48 but bundle .* 32x32"):
        analyze_video(b, video, progress=False)


def test_cuda_unavailable_is_clear(bundle: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider present: this test covers machines without it")
    with pytest.raises(BackendError, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        make_backend(Bundle.load(bundle), device="cuda")


def test_unknown_backend_and_task(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="unknown backend 'nope'.*onnxruntime"):
        make_backend(Bundle.load(bundle), "nope")
    b = Bundle.load(bundle)
    b.manifest.task = "made_up_task"  # a task no pipeline registers
    from dlc_runtime.pipelines import make_pipeline

    with pytest.raises(BundleError, match="task 'made_up_task' is not supported"):
        make_pipeline(b, make_backend(b))


def test_multi_animal_layout(tmp_path: Path) -> None:
    # The writer's 4-level layout, with unique bodyparts under individual "single".
    path = tmp_path / "ma.h5"
    with H5Writer(path, "S", ["a", "b"], ["m1", "m2"], ["u"], multi_animal=True) as w:
        for start in (0, 3):
            kp = np.arange(3 * 2 * 2 * 3, dtype=np.float32).reshape(3, 2, 2, 3) + start
            w.append(np.arange(start, start + 3), kp, np.full((3, 1, 3), 7.0))
    df = pd.read_hdf(path, "df_with_missing")
    assert list(df.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    assert df.columns.equals(make_columns("S", ["a", "b"], ["m1", "m2"], ["u"], True))
    assert list(df.columns.get_level_values("individuals").unique()) == ["m1", "m2", "single"]
    assert df.shape == (6, 15)
    # Row = frame; columns = individuals x bodyparts x coords in C order of (N, K, 3).
    np.testing.assert_array_equal(df.loc[3:5].iloc[:, :12].to_numpy(),
                                  np.arange(36, dtype=np.float64).reshape(3, 12) + 3)
    assert (df[("S", "single", "u", "x")] == 7.0).all()
