"""Shared test fixtures: where ../shared is, and skips when it is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DLC3 = SHARED / "dlc3"
OPENFIELD = SHARED / "data" / "openfield-Pranav-2018-10-30"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared not checked out beside the project)")
    return path


def dlc3_file(relative: str) -> Path:
    """A file under ../shared/dlc3 (skips the test when ../shared is absent)."""
    return require(DLC3 / relative)


def reference_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """DeepLabCut 3.0.1's state_dict (key, shape) pairs, in order, from state_dict_keys/NAME.txt."""
    rows = []
    for line in dlc3_file(f"state_dict_keys/{name}.txt").read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            dims = shape.strip().strip("()").replace(" ", "")
            rows.append((key, tuple(int(d) for d in dims.split(",") if d)))
    return rows


@pytest.fixture
def one_thread():
    """One torch thread: small convs on a loaded 2-core machine run several times faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The real `dlc demo` (generate -> train 60 epochs -> export -> analyze), once per session:
    about a minute, so only the slow tests that check its accuracy use it."""
    from dlc_cli.demo import run_demo

    output = tmp_path_factory.mktemp("demo") / "dlc-demo"
    result = run_demo(output, seed=0, echo=lambda _: None)
    return output, result


# A project small enough to train for a few epochs in seconds (128x96, 24 labels, 60 frames).
QUICK_DEMO_SPEC = dict(width=128, height=96, num_labeled_frames=24, num_video_frames=60)
QUICK_DEMO_EPOCHS = 4


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    """The same `dlc demo` path on a small project and a few epochs: a project with snapshots,
    an exported bundle and analysis results for tests of files, folders and the CLI (its
    keypoints are not accurate; `demo_run` is for accuracy)."""
    from dlc_cli.demo import run_demo
    from dlc_train.synthetic import SyntheticSpec

    output = tmp_path_factory.mktemp("quick-demo") / "dlc-demo"
    result = run_demo(output, epochs=QUICK_DEMO_EPOCHS, echo=lambda _: None,
                      spec=SyntheticSpec(seed=0, **QUICK_DEMO_SPEC))
    return output, result


@pytest.fixture(scope="session")
def openfield_copy(tmp_path_factory):
    """A writable copy of the openfield example project (never write into ../shared)."""
    import shutil

    src = require(OPENFIELD)
    dest = tmp_path_factory.mktemp("openfield") / src.name
    shutil.copytree(src, dest)
    return dest


@pytest.fixture(scope="module")
def truncated_avi(tmp_path_factory):
    """A 30-frame MJPG avi cut to 60 % of its bytes: it opens, announces 30 frames in its
    header, then ends early (skips where OpenCV does not report the header's count)."""
    from dlc_runtime.testing import make_test_video
    from dlc_runtime.video import VideoIterator

    folder = tmp_path_factory.mktemp("avi")
    full = make_test_video(folder / "full.avi", n_frames=30, fourcc="MJPG")
    cut = folder / "cut.avi"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    with VideoIterator(cut) as it:
        if it.n_frames != 30:
            pytest.skip("this OpenCV build does not report the header frame count of a cut avi")
    return cut
