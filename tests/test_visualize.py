"""Looking at results: labeled videos, plots, and DeepLabCut's ``_full.pickle``.

Results are written with the project's own writers (H5Writer for known keypoints, the toy
bundle + analyze_video end to end); videos are made of uniformly coloured frames so the
colour at a drawn keypoint can be told from the background after mp4v compression.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from dlc_cli.visualize import label_video, plot
from dlc_runtime import analyze_video
from dlc_runtime.errors import OutputError, VideoError
from dlc_runtime.full_pickle import (FullPickleWriter, full_pickle_path, key_str_width,
                                     write_full_pickle)
from dlc_runtime.outputs import H5Writer
from dlc_runtime.testing import TOY_SCORER, frame_color, make_test_video, make_toy_bundle
from dlc_runtime.visualize import (PLOT_NAMES, PoseTable, VisualizeError, create_labeled_video,
                                   labeled_video_path, plot_trajectories)
from dlc_runtime.visualize.poses import RowCursor
from dlc_runtime.visualize.style import colormap_colors
from helpers.frames import read_video_frames

W, H, FPS, N = 160, 120, 15.0, 12
SCORER = "DLC_Test_visOct30shuffle1_snapshot_010"
TOL = 45  # per channel, after mp4v


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _single_keypoints(n: int = N) -> np.ndarray:
    """(n, 1, 2, 3): snout moves right, tail stays; tail NaN at frame 3, unlikely at frame 5."""
    kp = np.zeros((n, 1, 2, 3), np.float32)
    kp[:, 0, 0] = np.stack([40 + np.arange(n), np.full(n, 30), np.full(n, 0.9)], axis=1)
    kp[:, 0, 1] = [110, 85, 0.95]
    kp[3, 0, 1, :2] = np.nan
    kp[5, 0, 1, 2] = 0.3
    return kp


def _write_h5(path: Path, keypoints: np.ndarray, bodyparts=("snout", "tail"),
              individuals=("animal",), multi_animal=False, index=None) -> Path:
    index = np.arange(len(keypoints)) if index is None else np.asarray(index)
    with H5Writer(path, SCORER, list(bodyparts), list(individuals),
                  multi_animal=multi_animal) as writer:
        writer.append(index, keypoints)
    return path


@pytest.fixture
def single(tmp_path) -> tuple[Path, Path]:
    video = make_test_video(tmp_path / "mouse.mp4", n_frames=N, width=W, height=H, fps=FPS)
    h5 = _write_h5(tmp_path / f"mouse{SCORER}.h5", _single_keypoints())
    return h5, video


def _frames(path: Path) -> list[np.ndarray]:
    return read_video_frames(path, rgb=True)


def _close(pixel: np.ndarray, rgb) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.asarray(rgb, int)) <= TOL))


def _invoke(command, args):
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


def _one_line(result, *fragments) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------
# labeled videos
# ------------------------------------------------------------------------------------------
def test_labeled_video_frames_size_fps_and_marker_colours(single):
    h5, video = single
    result = create_labeled_video(h5, video, dotsize=6, progress=False)
    assert result.path == h5.with_name(f"mouse{SCORER}_p60_labeled.mp4")  # DeepLabCut's name
    cap = cv2.VideoCapture(str(result.path))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (W, H)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    cap.release()
    frames = _frames(result.path)
    assert len(frames) == N and result.n_frames == N
    snout, tail = colormap_colors("rainbow", 2)  # by bodypart, DeepLabCut's default colormap
    assert not _close(snout, tail)
    for i, frame in enumerate(frames):
        assert _close(frame[30, 40 + i], snout), (i, frame[30, 40 + i])
        background = frame_color(i)
        assert _close(frame[5, 5], background)
        if i in (3, 5):  # NaN, then likelihood 0.3 < pcutoff: nothing drawn
            assert _close(frame[85, 110], background), (i, frame[85, 110])
        else:
            assert _close(frame[85, 110], tail), (i, frame[85, 110])
    assert not list(h5.parent.glob("*.part*"))


def test_pcutoff_and_colormap_options_change_what_is_drawn(single):
    h5, video = single
    out = create_labeled_video(h5, video, pcutoff=0.2, colormap="viridis", dotsize=6,
                               progress=False)
    assert out.path.name.endswith("_p20_labeled.mp4")
    frames = _frames(out.path)
    tail = colormap_colors("viridis", 2)[1]
    assert _close(frames[5][85, 110], tail)  # 0.3 > 0.2: drawn now
    assert _close(frames[3][85, 110], frame_color(3))  # NaN: never


def test_skeleton_segments_are_drawn_only_when_asked(single, tmp_path):
    h5, video = single
    plain = create_labeled_video(h5, video, output=tmp_path / "plain.mp4", progress=False)
    bones = create_labeled_video(h5, video, output=tmp_path / "bones.mp4", draw_skeleton=True,
                                 skeleton=[("snout", "tail")], skeleton_color="white",
                                 progress=False)
    # The middle of the segment snout (40, 30) -> tail (110, 85) in frame 0, far from both dots.
    plain0, bones0 = _frames(plain.path)[0], _frames(bones.path)[0]
    mid = (round((30 + 85) / 2), round((40 + 110) / 2))
    assert _close(plain0[mid], frame_color(0))
    assert bones0[mid].astype(int).sum() > np.sum(frame_color(0)) + 150, bones0[mid]
    # Frame 3's tail is NaN: no segment either.
    bones3 = _frames(bones.path)[3]
    assert _close(bones3[(30 + 85) // 2, (43 + 110) // 2], frame_color(3))


def test_multi_animal_coloured_by_individual(tmp_path):
    video = make_test_video(tmp_path / "pair.mp4", n_frames=4, width=W, height=H, fps=FPS)
    kp = np.zeros((4, 2, 2, 3), np.float32)
    kp[:, 0] = [[30, 30, 0.9], [50, 30, 0.9]]
    kp[:, 1] = [[100, 90, 0.9], [130, 90, 0.9]]
    h5 = _write_h5(tmp_path / f"pair{SCORER}.h5", kp, individuals=("mouse1", "mouse2"),
                   multi_animal=True)
    result = create_labeled_video(h5, video, dotsize=6, progress=False)
    assert result.path.name == f"pair{SCORER}_id_p60_labeled.mp4"
    first, second = colormap_colors("rainbow", 2)
    frame = _frames(result.path)[2]
    assert _close(frame[30, 30], first) and _close(frame[30, 50], first)
    assert _close(frame[90, 100], second) and _close(frame[90, 130], second)
    only = create_labeled_video(h5, video, individuals=["mouse2"], color_by="bodypart",
                                output=tmp_path / "only.mp4", progress=False)
    frame = _frames(only.path)[2]
    assert _close(frame[30, 30], frame_color(2))  # mouse1 left out
    assert _close(frame[90, 130], colormap_colors("rainbow", 2)[1])  # tail colour


def test_strided_rows_span_their_frames(tmp_path):
    video = make_test_video(tmp_path / "s.mp4", n_frames=10, width=W, height=H, fps=FPS)
    kp = np.tile(np.array([[[[60, 60, 0.9], [100, 60, 0.9]]]], np.float32), (3, 1, 1, 1))
    h5 = _write_h5(tmp_path / f"s{SCORER}.h5", kp, index=[2, 4, 6])
    result = create_labeled_video(h5, video, progress=False)
    frames = _frames(result.path)
    assert len(frames) == 5  # frames 2..6
    for k, frame in enumerate(frames):
        drawn = not _close(frame[60, 60], frame_color(2 + k))
        assert drawn == (k % 2 == 0), k


def test_row_cursor_across_chunks_and_out_of_order_rows(tmp_path):
    kp = np.arange(7 * 2 * 3, dtype=np.float32).reshape(7, 1, 2, 3)
    h5 = _write_h5(tmp_path / "c.h5", kp, index=[0, 1, 3, 4, 5, 8, 9])
    with PoseTable(h5) as table:
        cursor = RowCursor(table, chunk_rows=2)
        rows = [cursor.at(f) for f in range(10)]
    present = [i for i, r in enumerate(rows) if r is not None]
    assert present == [0, 1, 3, 4, 5, 8, 9]
    assert np.array_equal(rows[8], kp[5, 0])
    bad = _write_h5(tmp_path / "bad.h5", kp[:3], index=[0, 5, 2])
    with pytest.raises(VisualizeError, match="not in increasing frame order"):
        PoseTable(bad)


def test_end_to_end_with_the_toy_bundle_and_the_cli(tmp_path):
    bundle = make_toy_bundle(tmp_path / "toy.bundle")
    # The toy graph puts x at the mean pixel value and y at the mean red: inside 200x160.
    video = make_test_video(tmp_path / "v.mp4", n_frames=8, width=200, height=160, fps=12)
    analyze_video(bundle, video, progress=False)
    result = _invoke(label_video, [bundle, video, "--pcutoff", "0.1", "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / f"v{TOY_SCORER}_p10_labeled.mp4"
    assert str(out) in result.output
    frames = _frames(out)
    assert len(frames) == 8
    with PoseTable(tmp_path / f"v{TOY_SCORER}.h5") as table:
        _, values = table.read_all()
    tail = colormap_colors("rainbow", 2)[1]
    for i, (frame, row) in enumerate(zip(frames, values)):
        x, y = row[1, :2]  # the toy's tailbase: 1 px from the snout, drawn over it
        assert _close(frame[int(round(y)), int(round(x))], tail), i
        assert _close(frame[2, 2], frame_color(i))
    # A second run keeps the file; --overwrite writes it again.
    again = _invoke(label_video, [bundle, video, "--pcutoff", "0.1", "--no-progress"])
    assert again.exit_code == 0 and "--overwrite" in again.output


# ------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------
def _assert_pngs(files: list[Path]) -> None:
    for path in files:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, path


def test_plots_single_animal(single):
    pytest.importorskip("matplotlib")
    h5, video = single
    result = plot_trajectories(h5, video)
    assert result.folder == h5.parent / "plot-poses" / "mouse"
    assert [p.name for p in result.files] == [f"{n}.png" for n in PLOT_NAMES]
    _assert_pngs(result.files)
    assert not list(result.folder.glob("*.part"))


def test_plots_multi_animal_from_the_h5_alone_and_the_cli(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    kp = rng.uniform(10, 100, (30, 2, 2, 3)).astype(np.float32)
    kp[..., 2] = 0.9
    h5 = _write_h5(tmp_path / f"pair{SCORER}.h5", kp, individuals=("m1", "m2"),
                   multi_animal=True)
    result = _invoke(plot, [h5])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "plot-poses" / "pair"  # the video stem, from the .h5 name
    files = [folder / f"{n}{ind}.png" for ind in ("m1", "m2") for n in PLOT_NAMES]
    _assert_pngs(files)
    assert sorted(folder.iterdir()) == sorted(files)


# ------------------------------------------------------------------------------------------
# bad input: one line, nothing damaged
# ------------------------------------------------------------------------------------------
def test_missing_h5_for_a_bundle_and_video(tmp_path):
    bundle = make_toy_bundle(tmp_path / "toy.bundle")
    video = make_test_video(tmp_path / "never.mp4", n_frames=3)
    _one_line(_invoke(label_video, [bundle, video]), "does not exist", "dlc analyze")
    _one_line(_invoke(plot, [bundle, video]), "does not exist")
    _one_line(_invoke(plot, [bundle]), "give the VIDEO")
    _one_line(_invoke(label_video, [tmp_path / "nothing.h5", video]), "does not exist")
    (tmp_path / "text.h5").write_text("not hdf5")
    _one_line(_invoke(label_video, [tmp_path / "text.h5", video]), "cannot be read as HDF5")


def test_h5_of_another_video_is_refused(tmp_path, single):
    h5, video = single
    short = make_test_video(tmp_path / "short.mp4", n_frames=6, width=W, height=H, fps=FPS)
    _one_line(_invoke(label_video, [h5, short]), "up to frame 11", "6 frames")
    # With a _meta.pickle (analyze_video writes one) the size and frame count are checked.
    bundle = make_toy_bundle(tmp_path / "toy.bundle")
    analyzed = make_test_video(tmp_path / "a.mp4", n_frames=20, width=W, height=H)
    analyze_video(bundle, analyzed, progress=False)
    h5a = tmp_path / f"a{TOY_SCORER}.h5"
    other = make_test_video(tmp_path / "o.mp4", n_frames=20, width=W + 16, height=H)
    _one_line(_invoke(label_video, [h5a, other]), "160x120", "176x120")
    longer = make_test_video(tmp_path / "l.mp4", n_frames=40, width=W, height=H)
    _one_line(_invoke(label_video, [h5a, longer]), "20 frames", "has 40")
    assert not list(tmp_path.glob("*labeled*"))


def test_video_ending_early_keeps_the_earlier_labeled_video(tmp_path, single):
    h5, video = single
    first = create_labeled_video(h5, video, progress=False)
    before = first.path.read_bytes()
    # Same name, fewer frames than its metadata says is not possible to fake with OpenCV;
    # an .h5 reaching past the end within the metadata tolerance is: the video ends early.
    kp = _single_keypoints(N + 2)
    _write_h5(h5, kp)
    with pytest.raises(VideoError, match="ends at frame 12"):
        create_labeled_video(h5, video, overwrite=True, progress=False)
    assert first.path.read_bytes() == before
    assert not list(h5.parent.glob("*.part*"))


def test_unwritable_destination(tmp_path, single):
    h5, video = single
    (tmp_path / "a-file").write_text("x")
    _one_line(_invoke(label_video, [h5, video, "-o", tmp_path / "a-file" / "x.mp4"]),
              "cannot write the labeled video")
    _one_line(_invoke(label_video, [h5, video, "-o", "/proc/dlc-labeled.mp4"]),
              "cannot write the labeled video")
    _one_line(_invoke(label_video, [h5, video, "-o", tmp_path / "x.mp4", "--codec", "zzzz"]),
              "codec")
    pytest.importorskip("matplotlib")
    _one_line(_invoke(plot, [h5, "-o", tmp_path / "a-file" / "plots"]), "cannot write the plots")
    _one_line(_invoke(plot, [h5, "-o", "/proc/dlc-plots"]), "cannot write the plots")
    assert not list(tmp_path.rglob("*.part*"))


def test_bad_names_and_settings_are_one_line(single):
    h5, video = single
    _one_line(_invoke(label_video, [h5, video, "--bodypart", "wing"]), "wing", "snout")
    _one_line(_invoke(label_video, [h5, video, "--colormap", "nope"]), "colormap")
    _one_line(_invoke(label_video, [h5, video, "--draw-skeleton", "--skeleton-color", "nope"]),
              "colour")
    _one_line(_invoke(label_video, [h5, h5.parent]), "folder")


def test_labeled_video_name_truncates_pcutoff_as_deeplabcut():
    assert labeled_video_path("/r/vDLC_x.h5", 0.6, False, "bodypart").name == \
        "vDLC_x_p60_labeled.mp4"
    assert labeled_video_path("/r/vDLC_x.h5", 0.29, True, "bodypart").name == \
        "vDLC_x_bp_p28_labeled.mp4"  # int(100 * 0.29) == 28, DeepLabCut's own rounding


# ------------------------------------------------------------------------------------------
# _full.pickle
# ------------------------------------------------------------------------------------------
def test_key_str_width_is_deeplabcuts():
    for n in (1, 2, 9, 10, 11, 99, 100, 101, 1000, 1001, 123456):
        assert key_str_width(n) == int(np.ceil(np.log10(n))), n


def _ma_run(n=12, animals=3, k=4, u=1, ids=2, seed=0):
    rng = np.random.default_rng(seed)
    kp = rng.uniform(0, 100, (n, animals, k, 3)).astype(np.float32)
    unique = rng.uniform(0, 100, (n, 1, u, 3)).astype(np.float32)
    identity = rng.uniform(0, 1, (n, animals, k, ids)).astype(np.float32)
    return kp, unique, identity


def test_full_pickle_structure(tmp_path):
    kp, unique, identity = _ma_run()
    decoder = {"graph": [[0, 1], [1, 2], [2, 3]], "edges_to_keep": [0, 2], "nms_radius": 5,
               "sigma": 1.0, "peak_threshold": 0.05}
    path = full_pickle_path(tmp_path / f"v{SCORER}.h5")
    assert path.name == f"v{SCORER}_full.pickle"
    write_full_pickle(path, kp, ["a", "b", "c", "d"], ["u"], unique_keypoints=unique,
                      identity_scores=identity, decoder=decoder)
    data = pickle.loads(path.read_bytes())
    assert type(data) is dict
    meta = data["metadata"]
    assert list(data)[0] == "metadata"
    assert meta["all_joints_names"] == ["a", "b", "c", "d", "u"]
    assert meta["all_joints"] == [[0], [1], [2], [3], [4]]
    assert meta["PAFgraph"] == [[0, 1], [1, 2], [2, 3]] and list(meta["PAFinds"]) == [0, 2]
    assert (meta["nms radius"], meta["minimal confidence"], meta["sigma"]) == (5, 0.05, 1.0)
    assert meta["nframes"] == 12 and meta["key_str_width"] == 2
    assert sorted(k for k in data if k != "metadata") == [f"frame{i:02d}" for i in range(12)]
    entry = data["frame07"]
    assert set(entry) == {"coordinates", "confidence", "costs", "identity"}
    assert entry["costs"] is None
    coords, conf = entry["coordinates"], entry["confidence"]
    assert isinstance(coords, tuple) and len(coords) == 1 and len(coords[0]) == 5
    for j in range(4):  # per bodypart: (animals, 2) and (animals, 1)
        assert np.array_equal(coords[0][j], kp[7, :, j, :2])
        assert np.array_equal(conf[j], kp[7, :, j, 2:3])
    assert np.array_equal(coords[0][4], unique[7, 0, :, :2]) and conf[4].shape == (1, 1)
    assert len(entry["identity"]) == 5
    assert np.array_equal(entry["identity"][2], identity[7, :, 2])
    assert np.all(entry["identity"][4] == -1) and entry["identity"][4].shape == (3, 2)
    # DeepLabCut's reader (_generate_assemblies_file) walks the keys like this:
    width = meta["key_str_width"]
    for i in range(meta["nframes"]):
        frame = data["frame" + str(i).zfill(width)]
        pose = np.concatenate([np.stack(frame["coordinates"][0][:4]),
                               np.stack(frame["confidence"][:4])], axis=-1)
        assert np.array_equal(pose.transpose(1, 0, 2), kp[i])


def test_full_pickle_streamed_in_batches_equals_one_shot(tmp_path):
    kp, unique, _ = _ma_run(n=25)
    boxes = [np.full((2, 4), i, np.float32) for i in range(25)]
    scores = [np.full(2, 0.5 + i / 100, np.float32) for i in range(25)]
    one = write_full_pickle(tmp_path / "one_full.pickle", kp, list("abcd"), ["u"],
                            unique_keypoints=unique, bboxes=boxes, bbox_scores=scores)
    streamed = tmp_path / "two_full.pickle"
    with FullPickleWriter(streamed, list("abcd"), ["u"]) as writer:
        for start in range(0, 25, 8):
            sl = slice(start, start + 8)
            writer.append(np.arange(25)[sl], kp[sl], unique[sl], bboxes=boxes[sl],
                          bbox_scores=scores[sl])
    a, b = pickle.loads(one.read_bytes()), pickle.loads(streamed.read_bytes())
    assert list(a) == list(b)
    assert a["metadata"]["PAFgraph"] is None and len(a["metadata"]["PAFinds"]) == 0
    for key in a:
        if key == "metadata":
            continue
        assert np.array_equal(a[key]["bboxes"], b[key]["bboxes"])
        for x, y in zip(a[key]["coordinates"][0], b[key]["coordinates"][0]):
            assert np.array_equal(x, y)
    assert np.array_equal(b["frame24"]["bboxes"], boxes[24])
    assert not list(tmp_path.glob("*.spool")) and not list(tmp_path.glob("*.part"))


def test_full_pickle_frame_selection_keys_true_indices(tmp_path):
    kp, _, _ = _ma_run(n=3, u=0)
    path = write_full_pickle(tmp_path / "s_full.pickle", kp, list("abcd"),
                             frame_indices=np.array([100, 110, 120]))
    data = pickle.loads(path.read_bytes())
    assert sorted(k for k in data if k != "metadata") == ["frame100", "frame110", "frame120"]
    assert data["metadata"]["nframes"] == 3 and data["metadata"]["key_str_width"] == 3


def test_full_pickle_failure_keeps_the_previous_file(tmp_path):
    kp, _, _ = _ma_run(n=4, u=0)
    path = write_full_pickle(tmp_path / "v_full.pickle", kp, list("abcd"))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="keypoints must be"):
        with FullPickleWriter(path, list("abcd")) as writer:
            writer.append(np.arange(4), kp)
            writer.append(np.arange(4, 8), kp[:, :, :3])  # wrong bodypart count
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v_full.pickle"]
    with pytest.raises(ValueError, match="must increase"):
        with FullPickleWriter(path, list("abcd")) as writer:
            writer.append(np.arange(4), kp)
            writer.append(np.arange(4), kp)
    assert path.read_bytes() == before
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputError, match="cannot create"):
        FullPickleWriter(tmp_path / "a-file" / "v_full.pickle", list("abcd"))


# ------------------------------------------------------------------------------------------
# where the settings come from
# ------------------------------------------------------------------------------------------
def test_project_settings_and_skeleton(single, tmp_path):
    h5, video = single
    config = tmp_path / "project" / "config.yaml"
    config.parent.mkdir()
    config.write_text("bodyparts: [snout, tail]\npcutoff: 0.2\ndotsize: 6\n"
                      "skeleton: [[snout, tail]]\nskeleton_color: white\n")
    result = _invoke(label_video, [h5, video, "--config", config, "--draw-skeleton",
                                   "--no-progress"])
    assert result.exit_code == 0, result.output
    out = h5.with_name(f"mouse{SCORER}_p20_labeled.mp4")  # the project's pcutoff names it
    frames = _frames(out)
    assert _close(frames[5][85, 110], colormap_colors("rainbow", 2)[1])  # 0.3 > 0.2
    mid = (round((30 + 85) / 2), round((40 + 110) / 2))
    assert frames[0][mid].astype(int).sum() > np.sum(frame_color(0)) + 150  # white skeleton


def test_bundle_names_its_project_and_paf_graph(tmp_path):
    import yaml

    from dlc_runtime.bundle import Bundle, write_manifest
    from dlc_runtime.visualize import locate_results

    bundle_dir = make_toy_bundle(tmp_path / "toy.bundle")
    manifest = Bundle.load(bundle_dir).manifest
    manifest.decoder = {"type": "toy", "graph": [[0, 1]]}  # what a PAF bundle records
    write_manifest(bundle_dir, manifest)
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("bodyparts: [snout, tailbase]\npcutoff: 0.3\n")
    (bundle_dir / "pytorch_config.yaml").write_text(
        yaml.safe_dump({"metadata": {"project_path": str(project)}}))
    video = make_test_video(tmp_path / "v.mp4", n_frames=3)
    analyze_video(bundle_dir, video, progress=False)
    source = locate_results(bundle_dir, video)
    assert source.h5 == tmp_path / f"v{TOY_SCORER}.h5"
    assert source.manifest_skeleton == [("snout", "tailbase")]
    assert source.project_path == project / "config.yaml" and source.project["pcutoff"] == 0.3
    # The same project is found from the .h5 alone, through its _meta.pickle.
    assert locate_results(source.h5).project_path == project / "config.yaml"


def test_fixed_format_h5_is_read_too(tmp_path):
    import pandas as pd

    from dlc_runtime.outputs import make_columns

    kp = _single_keypoints(6)[:4].reshape(4, -1)
    df = pd.DataFrame(kp, columns=make_columns(SCORER, ["snout", "tail"]))
    df.to_hdf(tmp_path / "f.h5", key="df_with_missing", format="fixed")
    with PoseTable(tmp_path / "f.h5") as table:
        assert (table.n_rows, table.first_index, table.last_index) == (4, 0, 3)
        assert table.bodyparts == ["snout", "tail"] and not table.multi_animal
        _, values = table.read_all()
    assert np.array_equal(values.reshape(4, -1), kp, equal_nan=True)
