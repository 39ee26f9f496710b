"""NVDEC decoding (``NvdecVideoIterator``), its NV12 -> RGB conversion and the decoder choice
(``open_video``), on the CPU.

PyNvVideoCodec is replaced by ``helpers.fake_nvdec`` (its ``SimpleDecoder`` surface, decoding
with OpenCV, frames in reused host memory, NV12 or RGB as asked): the iterator's real code runs,
with its batches assembled by torch on the CPU (``batch_device="cpu"``). The fake's RGB frames
are OpenCV's, so ``colour="nvdec"`` must give ``VideoIterator``'s frames exactly; its NV12 frames
are OpenCV's RGB -> YUV 4:2:0, so ``colour="bt601"`` must give them back within
``NV12_ROUND_TRIP`` levels (uniform test colours: no chroma detail is lost). The conversion itself
is checked against OpenCV's decode of raw I420 video. The real decoder on a GPU is checked in
``tests/test_gpu_nvdec.py``.
"""
from __future__ import annotations

import logging
import struct
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dlc_runtime import nvdec as nvdec_module
from dlc_runtime.decoders import open_video
from dlc_runtime.errors import VideoError
from dlc_runtime.nv12 import nv12_to_rgb
from dlc_runtime.nvdec import INSTALL_HINT, NvdecVideoIterator
from dlc_runtime.testing import make_test_video
from dlc_runtime.video import VideoIterator
from helpers.fake_nvdec import install_fake_nvdec
from helpers.frames import textured_frames

N = 20
ON_CPU = {"batch_device": "cpu"}
#: levels the fake's NV12 (OpenCV RGB -> YUV) and back may differ from OpenCV's RGB (measured 1).
NV12_ROUND_TRIP = 2


def _close(frames: np.ndarray, expected: np.ndarray, atol: int = NV12_ROUND_TRIP) -> None:
    assert frames.shape == expected.shape
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= atol


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_video(tmp_path_factory.mktemp("nvdec") / "clip.mp4", n_frames=N)


@pytest.fixture(scope="module")
def reference(video: Path) -> np.ndarray:
    """Every frame as the CPU decoder gives it."""
    with VideoIterator(video, batch_size=N) as it:
        return np.concatenate([f for _, f in it])


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    return install_fake_nvdec(monkeypatch)


def _nvdec_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nvdec-") and t.is_alive()]


def _collect(it) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(indices, frames as numpy, batch sizes) of a whole iteration, each batch copied at once."""
    indices, frames, sizes = [], [], []
    for idx, batch in it:
        assert isinstance(idx, np.ndarray) and idx.dtype == np.int64
        assert isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8
        assert batch.is_contiguous() and batch.shape[1:] == (48, 64, 3)
        indices.append(idx)
        frames.append(batch.numpy().copy())
        sizes.append(len(idx))
    return np.concatenate(indices), np.concatenate(frames), sizes


# ---------------------------------------------------------------------------------------------
# NvdecVideoIterator
@pytest.mark.parametrize("colour, atol, native", [("bt601", NV12_ROUND_TRIP, "NATIVE"),
                                                   ("nvdec", 0, "RGB")])
def test_same_frames_and_indices_as_the_cpu_decoder(video, reference, fake, colour, atol,
                                                    native):
    with NvdecVideoIterator(video, batch_size=8, prefetch=2, colour=colour, **ON_CPU) as it:
        assert (it.width, it.height, it.n_frames, it.codec) == (64, 48, N, "mpeg4")
        assert it.fps == pytest.approx(10.0) and len(it) == 3
        indices, frames, sizes = _collect(it)
    assert sizes == [8, 8, 4]  # the last batch is partial
    np.testing.assert_array_equal(indices, np.arange(N))
    _close(frames, reference, atol)
    assert it.n_decoded == N
    (opened,) = fake.calls["opened"]  # device memory, NV12 or RGB, on GPU 0
    assert opened["use_device_memory"] is True and opened["gpu_id"] == 0
    assert opened["output_color_type"] == fake.OutputColorType[native]
    assert max(fake.calls["batches"]) <= 8


def _raw_i420_frames(path: Path, height: int, width: int) -> np.ndarray:
    """The I420 frames stored in an uncompressed avi (its ``00dc`` chunks)."""
    data, size, frames, at = path.read_bytes(), height * width * 3 // 2, [], 0
    while (at := data.find(b"00dc", at)) >= 0:
        if struct.unpack("<I", data[at + 4:at + 8])[0] == size:
            frames.append(np.frombuffer(data[at + 8:at + 8 + size], np.uint8))
        at += 8
    return np.array(frames)


def test_nv12_conversion_gives_the_cpu_decoders_colours(tmp_path):
    """OpenCV writes raw I420 frames and decodes them (FFmpeg's swscale) as the CPU decoder
    does; the GPU conversion of the same YUV must give the same RGB within 2 levels, saturated
    colours included (PyNvVideoCodec's BT.709 would be off by up to ~30)."""
    h, w = 96, 128
    frames = textured_frames(6, h, w, seed=1)
    frames[0] = (20, 200, 60)
    frames[1, :, : w // 2] = (230, 30, 200)
    writer = cv2.VideoWriter(str(tmp_path / "raw.avi"), cv2.VideoWriter_fourcc(*"I420"), 10,
                             (w, h))
    if not writer.isOpened():
        pytest.skip("this OpenCV cannot write raw I420 avi")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    with VideoIterator(tmp_path / "raw.avi", batch_size=6) as it:
        expected = np.concatenate([f for _, f in it])
    i420 = _raw_i420_frames(tmp_path / "raw.avi", h, w)
    assert i420.shape == (6, h * w * 3 // 2)
    u = i420[:, h * w: h * w * 5 // 4].reshape(6, h // 2, w // 2)
    v = i420[:, h * w * 5 // 4:].reshape(6, h // 2, w // 2)
    nv12 = np.concatenate([i420[:, : h * w].reshape(6, h, w),
                           np.stack([u, v], -1).reshape(6, h // 2, w)], axis=1)
    out = torch.empty((6, h, w, 3), dtype=torch.uint8)
    nv12_to_rgb(torch, torch.from_numpy(nv12), out)
    diff = np.abs(out.numpy().astype(int) - expected.astype(int))
    assert diff.max() <= 2 and diff.mean() < 1.0


@pytest.mark.parametrize("start, stop", [(5, 12), (0, 3), (17, None), (6, 100)])
def test_start_and_stop(video, reference, fake, start, stop):
    with NvdecVideoIterator(video, batch_size=4, start=start, stop=stop, **ON_CPU) as it:
        indices, frames, _ = _collect(it)
    end = N if stop is None else min(stop, N)
    np.testing.assert_array_equal(indices, np.arange(start, end))
    _close(frames, reference[start:end])
    assert fake.calls["seeks"] == ([start] if start else [])


def test_empty_range_reads_nothing(video, fake):
    with NvdecVideoIterator(video, start=4, stop=4, **ON_CPU) as it:
        assert list(it) == [] and it.n_decoded == 0
    assert fake.calls["batches"] == []


def test_held_batches_stay_intact_and_the_ring_is_reused(video, reference, fake):
    """The consumer keeps its `hold` latest batches while the decoder runs ahead; none of them
    changes, and batch memory is the fixed ring (batch k and k + ring_size share storage)."""
    hold = 2
    with NvdecVideoIterator(video, batch_size=2, prefetch=1, hold=hold, **ON_CPU) as it:
        held: list[tuple[torch.Tensor, torch.Tensor]] = []
        pointers = []
        for idx, batch in it:
            held = (held + [(batch, batch.clone())])[-hold:]
            pointers.append(batch.data_ptr())
            _close(batch.numpy(), reference[idx])
            for kept, as_received in held:
                assert torch.equal(kept, as_received)
        ring = it.ring_size
    assert ring == 1 + hold + 1
    assert len(pointers) == N // 2 > ring
    assert len(set(pointers)) == ring
    assert all(pointers[k] == pointers[k + ring] for k in range(len(pointers) - ring))


def test_metadata_off_by_two_is_tolerated(video, fake):
    it = NvdecVideoIterator(video, **ON_CPU)
    it.n_frames = N + 2  # what many mp4 containers report
    with it:
        assert sum(len(i) for i, _ in it) == N




def test_truncated_video_raises(truncated_avi, fake):
    with pytest.raises(VideoError, match=r"is truncated: decoded \d+ of 30 frames"):
        with NvdecVideoIterator(truncated_avi, batch_size=4, **ON_CPU) as it:
            for _ in it:
                pass


def test_truncated_video_allowed(truncated_avi, fake):
    with NvdecVideoIterator(truncated_avi, batch_size=4, allow_truncated=True, **ON_CPU) as it:
        n = sum(len(i) for i, _ in it)
    with VideoIterator(truncated_avi, allow_truncated=True) as cpu:
        assert n == sum(len(i) for i, _ in cpu)
    assert 0 < n < 30 and it.n_decoded == n


def test_close_while_iterating_stops_the_thread(video, fake):
    # batch_size=1, prefetch=1: the decode thread is blocked on a full queue when we leave.
    with NvdecVideoIterator(video, batch_size=1, prefetch=1, **ON_CPU) as it:
        for _ in it:
            break
    assert not _nvdec_threads()
    it.close()  # twice is fine


def test_abandoned_generator_stops_the_thread(video, fake):
    it = NvdecVideoIterator(video, batch_size=1, prefetch=1, **ON_CPU)
    gen = iter(it)
    next(gen)
    gen.close()  # what a for loop left by break or an exception does
    assert not _nvdec_threads()


def test_iterating_twice_is_an_error(video, fake):
    with NvdecVideoIterator(video, **ON_CPU) as it:
        list(it)
        with pytest.raises(RuntimeError, match="only once"):
            iter(it)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_corrupt_file_is_one_line(tmp_path, fake):
    bad = tmp_path / "random.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError) as exc:
        NvdecVideoIterator(bad, **ON_CPU)
    assert _one_line(exc).startswith(f"cannot decode video {bad} with NVDEC: ")


def test_missing_file_and_folder(tmp_path, fake):
    with pytest.raises(VideoError, match="cannot decode video .*does not exist"):
        NvdecVideoIterator(tmp_path / "nope.mp4", **ON_CPU)
    with pytest.raises(VideoError, match="is a folder, not a video"):
        NvdecVideoIterator(tmp_path, **ON_CPU)
    assert fake.calls["opened"] == []


def test_codec_nvdec_lacks_fails_at_open(video, monkeypatch):
    install_fake_nvdec(monkeypatch, unsupported_codecs={"mpeg4"})
    with pytest.raises(VideoError) as exc:
        NvdecVideoIterator(video, **ON_CPU)
    assert "Codec mpeg4 not supported on this GPU" in _one_line(exc)


@pytest.mark.parametrize("colour, got, expected", [
    ("bt601", "uint8 (144, 64)", "uint8 NV12 (72, 64)"),
    ("nvdec", "uint8 (3, 48, 64)", "uint8 RGB (48, 64, 3)"),
])
def test_frames_in_another_layout_are_refused(video, monkeypatch, colour, got, expected):
    install_fake_nvdec(monkeypatch, wrong_layout=True)  # 4:4:4 planes / planar RGB
    with pytest.raises(VideoError) as exc:
        NvdecVideoIterator(video, colour=colour, **ON_CPU)
    assert f"frame 0 came as {got}, expected {expected}" in _one_line(exc)


def test_decode_error_reaches_the_consumer(video, monkeypatch):
    install_fake_nvdec(monkeypatch, fail_at=9)
    got = []
    with pytest.raises(VideoError) as exc:
        with NvdecVideoIterator(video, batch_size=4, **ON_CPU) as it:
            for idx, _ in it:
                got.append(idx)
    assert "decoding frames 8-11: CUDA error: CUDA_ERROR_INVALID_SOURCE" in _one_line(exc)
    assert [list(i) for i in got] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert not _nvdec_threads()


def test_without_pynvvideocodec(video, monkeypatch):
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)  # import raises ImportError
    with pytest.raises(VideoError) as exc:
        NvdecVideoIterator(video, **ON_CPU)
    assert "NVDEC decoding needs PyNvVideoCodec and torch (" in _one_line(exc)
    assert INSTALL_HINT in str(exc.value)


def test_cuda_batches_need_a_cuda_torch(video, fake, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(VideoError, match="this torch sees no CUDA GPU"):
        NvdecVideoIterator(video)  # batches on cuda:0
    assert fake.calls["opened"] == []


# ---------------------------------------------------------------------------------------------
# open_video: which decoder, and why
def _decoder_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dlc_runtime.decoders"]


def _opened(caplog, video, **kwargs):
    caplog.set_level(logging.INFO, logger="dlc_runtime.decoders")
    it, reason = open_video(video, batch_size=8, **kwargs)
    assert _decoder_lines(caplog) == [f"decoder: {reason}"]  # one line, the reason returned
    return it, reason


@pytest.fixture
def cuda_torch(monkeypatch):
    """torch says it has a GPU (batches are still assembled on the CPU: ``batch_device``)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_auto_takes_nvdec_when_everything_is_there(video, reference, fake, cuda_torch, caplog):
    it, reason = _opened(caplog, video, device="cuda:1", accepts_device_frames=True,
                         nvdec_options=ON_CPU)
    with it:
        assert isinstance(it, NvdecVideoIterator)
        _, frames, _ = _collect(it)
    _close(frames, reference)
    assert reason == "nvdec (mpeg4 decoded on cuda:1, frames stay on the GPU for the backend)"
    assert fake.calls["opened"][0]["gpu_id"] == 1


@pytest.mark.parametrize("device, accepts, why", [
    ("cpu", True, "cpu (the backend runs on 'cpu', not on a CUDA GPU)"),
    ("cuda", False, "cpu (the backend takes host frames only)"),
])
def test_auto_keeps_the_cpu_where_nvdec_saves_nothing(video, fake, cuda_torch, caplog, device,
                                                       accepts, why):
    it, reason = _opened(caplog, video, device=device, accepts_device_frames=accepts)
    with it:
        assert isinstance(it, VideoIterator)
    assert reason == why
    assert fake.calls["opened"] == []  # NVDEC was not even tried


def test_auto_without_pynvvideocodec(video, cuda_torch, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)
    it, reason = _opened(caplog, video, device="cuda", accepts_device_frames=True)
    with it:
        assert isinstance(it, VideoIterator)
    assert reason == f"cpu (PyNvVideoCodec is not installed; {INSTALL_HINT} to decode on the GPU)"


def test_auto_when_pynvvideocodec_does_not_load(video, cuda_torch, monkeypatch, caplog):
    def broken():
        raise RuntimeError("Driver version is too old\nmore")

    monkeypatch.setattr(nvdec_module, "import_pynvvideocodec", broken)
    it, reason = _opened(caplog, video, device="cuda", accepts_device_frames=True)
    with it:
        assert isinstance(it, VideoIterator)
    assert reason.startswith("cpu (PyNvVideoCodec does not load: Driver version is too old;")


def test_auto_without_cuda_torch(video, fake, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    it, reason = _opened(caplog, video, device="cuda", accepts_device_frames=True)
    with it:
        assert isinstance(it, VideoIterator)
    assert reason.startswith("cpu (torch sees no CUDA GPU;")
    assert fake.calls["opened"] == []


def test_auto_falls_back_when_nvdec_cannot_decode_the_file(video, reference, cuda_torch,
                                                           monkeypatch, caplog):
    fake = install_fake_nvdec(monkeypatch, unsupported_codecs={"mpeg4"})
    it, reason = _opened(caplog, video, device="cuda", accepts_device_frames=True,
                         nvdec_options=ON_CPU)
    with it:
        assert isinstance(it, VideoIterator)
        np.testing.assert_array_equal(np.concatenate([f for _, f in it]), reference)
    assert reason == (f"cpu (cannot decode video {video} with NVDEC: Codec mpeg4 not supported "
                      "on this GPU)")
    assert len(fake.calls["opened"]) == 1


def test_auto_on_a_missing_file_raises_the_cpu_decoders_error(tmp_path, fake, cuda_torch):
    with pytest.raises(VideoError, match="cannot decode video .*: file does not exist"):
        open_video(tmp_path / "nope.mp4", device="cuda", accepts_device_frames=True,
                   nvdec_options=ON_CPU)


def test_forced_cpu(video, fake, cuda_torch, caplog):
    it, reason = _opened(caplog, video, decoder="cpu", device="cuda", accepts_device_frames=True)
    with it:
        assert isinstance(it, VideoIterator)
    assert reason == "cpu (asked for with decoder='cpu')"
    assert fake.calls["opened"] == []


def test_forced_nvdec_for_a_host_backend(video, fake, cuda_torch, caplog):
    it, reason = _opened(caplog, video, decoder="nvdec", device="cpu", nvdec_options=ON_CPU)
    with it:
        assert isinstance(it, NvdecVideoIterator)
    assert reason == ("nvdec (asked for with decoder='nvdec'; the backend takes host frames, so "
                      "each batch is copied to the host)")


def test_forced_nvdec_where_it_cannot_run(video, cuda_torch, monkeypatch):
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)
    with pytest.raises(VideoError) as exc:
        open_video(video, decoder="nvdec", device="cuda", accepts_device_frames=True)
    assert _one_line(exc) == (f"decoder 'nvdec' cannot run here: PyNvVideoCodec is not "
                              f"installed; {INSTALL_HINT} (with a CUDA build of torch), or use "
                              "decoder='cpu'")
    install_fake_nvdec(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(VideoError, match="cannot run here: torch sees no CUDA GPU"):
        open_video(video, decoder="nvdec", device="cuda", accepts_device_frames=True)


def test_forced_nvdec_on_a_file_it_cannot_decode(video, cuda_torch, monkeypatch):
    install_fake_nvdec(monkeypatch, unsupported_codecs={"mpeg4"})
    with pytest.raises(VideoError, match="with NVDEC: Codec mpeg4 not supported"):
        open_video(video, decoder="nvdec", device="cuda", nvdec_options=ON_CPU)


def test_unknown_decoder(video):
    with pytest.raises(VideoError, match="unknown decoder 'gpu'; use one of auto, cpu, nvdec"):
        open_video(video, decoder="gpu")
