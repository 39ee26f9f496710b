"""Analysis on Ray (``dlc_runtime.cluster``, ``dlc analyze --cluster ray``) on a local Ray of two
CPUs: the results equal a serial run's value for value (the same toy bundle and videos, the
same writers: exact equality, no tolerance), segments join into one run's rows, a worker killed
mid-item has its item finished elsewhere (resumed from its checkpoint), a corrupt video is
reported while the others are written, a rerun skips what is done, and a missing Ray is one
line.

The Ray tests share one local Ray (module fixture: ~6 s to start); each run starts its two
workers (~2 s); the one that kills workers is marked slow. The planning, the worker and the join are also tested in this process, without
Ray.
"""
from __future__ import annotations

import builtins
import sys
from pathlib import Path

import pandas as pd
import pytest

from dlc_runtime import analyze_video
from dlc_runtime.checkpoint import CRASH_ENV
from dlc_runtime.outputs import ResultPaths
from dlc_runtime.testing import TOY_SCORER, make_test_video, make_toy_bundle
from helpers.cli import invoke, one_error_line

BATCH = 8
RUN = dict(batch_size=BATCH, progress=False)


_PRINT = builtins.print


@pytest.fixture(scope="module")
def ray_local():
    from dlc_runtime.cluster.driver import import_ray

    pytest.importorskip("ray")
    ray = import_ray()   # as the driver imports it (with Ray's print patch off)
    # A small object store: only items and results cross it (and CI's /dev/shm is small).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()
    # Ray's tqdm support replaces builtins.print in the driver for good (seen after the
    # killed-worker test) unless the driver turns it off, as import_ray does.
    assert builtins.print is _PRINT


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_toy_bundle(tmp_path_factory.mktemp("b") / "toy.bundle")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("v")
    return [make_test_video(folder / f"v{i}.mp4", n_frames=24 + 6 * i) for i in range(3)]


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    return make_test_video(tmp_path_factory.mktemp("long") / "long.mp4", n_frames=90)


def _h5(video: Path, dest: Path) -> pd.DataFrame:
    return pd.read_hdf(ResultPaths.for_video(video, TOY_SCORER, dest).h5, "df_with_missing")


@pytest.fixture(scope="module")
def serial(bundle, videos, long_video, tmp_path_factory) -> Path:
    """One local, uninterrupted run of every video: the reference."""
    dest = tmp_path_factory.mktemp("serial")
    for video in [*videos, long_video]:
        analyze_video(bundle, video, dest, **RUN)
    return dest


def _same_as_serial(video: Path, dest: Path, serial: Path) -> None:
    pd.testing.assert_frame_equal(_h5(video, dest), _h5(video, serial), check_exact=True)


# -- without Ray: the plan, the worker and the join ---------------------------------------------

def test_segments_planned_worked_and_joined_in_process_equal_one_run(bundle, long_video, serial,
                                                                     tmp_path):
    from dlc_runtime.cluster.plan import cut, plan_videos
    from dlc_runtime.cluster.worker import AnalysisWorker
    from dlc_runtime.selection import FrameSelection

    # Cuts start on selected frames; the last keeps the selection's own stop.
    assert cut(FrameSelection(3, None, 2), 90, 3) == [(3, 31), (31, 61), (61, None)]
    [plan] = plan_videos([long_video], TOY_SCORER, tmp_path, workers=3, min_segment_frames=10)
    assert [(i.start, i.stop, i.frames) for i in plan.items] == [(0, 30, 30), (30, 60, 30),
                                                                 (60, None, 30)]
    # A rerun keeps the cut, whatever its number of workers (finished segments are skipped).
    again = plan_videos([long_video], TOY_SCORER, tmp_path, workers=1, min_segment_frames=10)
    assert [i.key for i in again[0].items] == [i.key for i in plan.items]
    # Too short to cut: one item.
    [whole] = plan_videos([long_video], TOY_SCORER, tmp_path / "x", workers=3,
                          min_segment_frames=60)
    assert [i.kind for i in whole.items] == ["video"]

    worker = AnalysisWorker("w0", str(bundle), analyze_options={"batch_size": BATCH})
    assert worker.ready()[1] is None
    for item in plan.items:
        assert worker.run(item).status == "analyzed"
    joined = worker.run(plan.join_item())
    assert joined.status == "analyzed"
    # The joined rows were published from the checkpoint, not analyzed again.
    assert joined.result.resumed_from == 90 and joined.result.seconds == 0
    _same_as_serial(long_video, tmp_path, serial)
    assert not plan.parts_folder.exists()
    assert plan_videos([long_video], TOY_SCORER, tmp_path, workers=3, min_segment_frames=10
                       )[0].items[0].kind == "video"  # complete: not cut, skipped by a worker


def test_worker_reports_a_corrupt_video_in_one_line(bundle, tmp_path):
    from dlc_runtime.cluster.plan import WorkItem
    from dlc_runtime.cluster.worker import AnalysisWorker

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(range(256)) * 50)
    worker = AnalysisWorker("w0", str(bundle))
    result = worker.run(WorkItem("corrupt.mp4", str(corrupt), "video", str(tmp_path)))
    assert result.status == "failed" and "corrupt.mp4" in result.reason
    assert "\n" not in result.reason


def test_missing_ray_is_one_line(bundle, videos, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    res = invoke(["analyze", bundle, videos[0], "--cluster", "ray", "--dest", tmp_path,
                  "--no-progress"])
    one_error_line(res, 'pip install "dlc-deploy[cluster]"')
    assert not list(tmp_path.iterdir())
    from dlc_runtime.cluster import ClusterError, analyze_videos_on_ray

    with pytest.raises(ClusterError, match=r"dlc-deploy\[cluster\]"):
        analyze_videos_on_ray(bundle, videos, tmp_path)


# -- on a local Ray ----------------------------------------------------------------------------

def test_two_workers_over_three_videos_equal_a_serial_run(ray_local, bundle, videos, serial,
                                                         tmp_path):
    from dlc_runtime.cluster import analyze_videos_on_ray

    summary = analyze_videos_on_ray(bundle, videos, tmp_path, workers=2, **RUN)
    assert [o.status for o in summary.outcomes] == ["analyzed"] * 3
    assert [o.frames for o in summary.outcomes] == [24, 30, 36]
    assert {w.split("@")[0] for o in summary.outcomes for w in o.workers} == {"w0", "w1"}
    for video in videos:
        _same_as_serial(video, tmp_path, serial)
    assert "video" in summary.table() and "w0@" in summary.table()


def test_a_long_video_split_into_segments_gives_one_runs_rows(ray_local, bundle, long_video,
                                                             serial, tmp_path):
    from dlc_runtime.cluster import analyze_videos_on_ray

    summary = analyze_videos_on_ray(bundle, [long_video], tmp_path, workers=2,
                                    min_segment_frames=10, save_as_csv=True, **RUN)
    [outcome] = summary.outcomes
    assert outcome.status == "analyzed" and outcome.segments == 2 and outcome.frames == 90
    _same_as_serial(long_video, tmp_path, serial)
    paths = ResultPaths.for_video(long_video, TOY_SCORER, tmp_path)
    assert paths.csv.is_file() and paths.meta.is_file() and paths.record.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (paths.h5, paths.csv, paths.meta, paths.record))  # parts removed


@pytest.mark.slow  # workers die and new ones start: ~5 s
def test_a_worker_killed_mid_item_has_it_finished_elsewhere(ray_local, bundle, videos, serial,
                                                           tmp_path):
    from dlc_runtime.cluster import analyze_videos_on_ray

    # Every first attempt SIGKILLs its worker right after its first checkpoint (8 rows): the
    # item goes to a new worker, which resumes it from that checkpoint.
    summary = analyze_videos_on_ray(bundle, videos[:2], tmp_path, workers=2,
                                    worker_env={CRASH_ENV: "checkpoint:1"},
                                    checkpoint_every=BATCH, checkpoint_seconds=None, **RUN)
    assert [o.status for o in summary.outcomes] == ["analyzed"] * 2
    assert [o.attempts for o in summary.outcomes] == [2, 2]
    assert summary.worker_deaths == 2
    assert [o.result.resumed_from for o in summary.outcomes] == [BATCH, BATCH]
    for video in videos[:2]:
        _same_as_serial(video, tmp_path, serial)


def test_cli_corrupt_video_reported_good_ones_written_rerun_skips(ray_local, bundle, videos,
                                                                 serial, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(range(256)) * 50)
    out = tmp_path / "out"
    args = ["analyze", bundle, videos[0], corrupt, videos[1], "--cluster", "ray", "--workers",
            "2", "--dest", out, "--batch-size", BATCH, "--no-progress"]
    res = invoke(args)
    one_error_line(res, "3 videos: 2 analyzed, 0 skipped (already analyzed), 1 failed",
                   "corrupt.mp4")
    for video in videos[:2]:
        _same_as_serial(video, out, serial)
    table = res.stdout[res.stdout.index("video "):]
    assert "failed" in table and "corrupt.mp4" in table and "w0@" in table
    # The rerun skips the finished videos and still fails on the corrupt one.
    res = invoke(args)
    one_error_line(res, "3 videos: 0 analyzed, 2 skipped (already analyzed), 1 failed")
