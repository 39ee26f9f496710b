"""dlc_runtime must run with torch, dlc_train and dlc_export unimportable."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlc_runtime.testing import make_test_video, make_toy_bundle
from helpers.blocked import run_blocked

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
from dlc_runtime import analyze_video

res = analyze_video(sys.argv[1], sys.argv[2], save_as_csv=True, progress=False)
assert res.n_frames == 6, res
assert not leaked(), leaked()
print("OK", res.fps)
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("iso")
    # Built in this (torch-allowed) process: onnx is a test-time dependency only.
    return make_toy_bundle(folder / "toy.bundle"), make_test_video(folder / "v.mp4", n_frames=6)


def test_runtime_runs_without_torch(inputs: tuple[Path, Path]) -> None:
    bundle, video = inputs
    proc = run_blocked(SCRIPT, bundle, video)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK")


def test_runtime_sources_do_not_import_forbidden_packages() -> None:
    # Static belt to the dynamic braces above: catches imports on paths the test does not run.
    import re

    pattern = re.compile(r"^\s*(import|from)\s+(torch|dlc_train|dlc_export)\b", re.M)
    torch_only = re.compile(r"^\s*(import|from)\s+(dlc_train|dlc_export)\b", re.M)
    # The modules meant to use torch, each importing it inside a function: the torch backend
    # (when it is created), the NVDEC decoder (device batches are torch tensors) and the
    # benchmark's engine-only timing (frames put on the GPU for a backend that takes them).
    runtime = REPO / "dlc_runtime"
    allowed_torch = {runtime / "backends" / "torch_backend.py", runtime / "nvdec.py",
                     runtime / "benchmark" / "runner.py"}
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "dlc_runtime").rglob("*.py")
                 if (torch_only if p in allowed_torch else pattern).search(p.read_text())]
    assert not offenders, offenders
