"""Bundle manifest: round trip and one-line, actionable validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dlc_runtime.bundle import (MANIFEST_NAME, Bundle, GraphSpec, Manifest, TensorSpec,
                                sha256_file, write_manifest)
from dlc_runtime.errors import BundleError
from dlc_runtime.testing import TOY_SCORER, make_toy_bundle


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    return make_toy_bundle(tmp_path / "toy.bundle")


def _edit_manifest(bundle_dir: Path, **changes) -> None:
    path = bundle_dir / MANIFEST_NAME
    data = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_load_round_trip(bundle_dir: Path) -> None:
    b = Bundle.load(bundle_dir)
    assert b.task == "bottom_up"
    assert b.scorer == TOY_SCORER
    assert b.bodyparts == ["snout", "tailbase"]
    assert b.individuals == ["animal"] and b.unique_bodyparts == [] and not b.multi_animal
    assert b.input.dynamic_size and b.input.batch.max == 64
    assert b.graph_path("pose") == bundle_dir / "pose.onnx"
    assert b.graph_paths == {"pose": bundle_dir / "pose.onnx"}
    assert b.graph().sha256 == sha256_file(bundle_dir / "pose.onnx")
    # Loading through the manifest file path works too, and to_dict round-trips.
    b2 = Bundle.load(bundle_dir / MANIFEST_NAME)
    assert b2.manifest.to_dict() == b.manifest.to_dict()
    assert Manifest.from_dict(b.manifest.to_dict()) == b.manifest


def test_write_manifest_is_atomic_and_validates(tmp_path: Path) -> None:
    bad = Manifest(task="sideways", scorer="s", bodyparts=["a"], individuals=["i"],
                   graphs={"pose": GraphSpec("pose.onnx", [TensorSpec("images", "uint8", [1])],
                                             [TensorSpec("keypoints", "float32", [1])])})
    with pytest.raises(BundleError, match="unknown task 'sideways'"):
        write_manifest(tmp_path, bad)
    assert list(tmp_path.iterdir()) == []  # nothing written, no .part left


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleError) as exc:
        Bundle.load(tmp_path)
    msg = _one_line(exc)
    assert "manifest.yaml is missing" in msg and str(tmp_path) in msg


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        Bundle.load(tmp_path / "nope.bundle")


def test_unknown_schema_version(bundle_dir: Path) -> None:
    _edit_manifest(bundle_dir, schema_version=99)
    with pytest.raises(BundleError) as exc:
        Bundle.load(bundle_dir)
    msg = _one_line(exc)
    assert "unknown schema_version 99" in msg and "upgrade dlc-deploy" in msg


@pytest.mark.parametrize("key", ["schema_version", "scorer", "bodyparts", "graphs", "task"])
def test_missing_required_key(bundle_dir: Path, key: str) -> None:
    _edit_manifest(bundle_dir, **{key: None})
    with pytest.raises(BundleError) as exc:
        Bundle.load(bundle_dir)
    assert f"missing required key '{key}'" in _one_line(exc)


def test_wrong_type(bundle_dir: Path) -> None:
    _edit_manifest(bundle_dir, bodyparts="snout")
    with pytest.raises(BundleError) as exc:
        Bundle.load(bundle_dir)
    assert "'bodyparts' must be list" in _one_line(exc)


def test_not_yaml(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST_NAME).write_text("schema_version: [1\n  oops: {")
    with pytest.raises(BundleError) as exc:
        Bundle.load(bundle_dir)
    assert "not valid YAML" in _one_line(exc)


def test_missing_graph_file(bundle_dir: Path) -> None:
    (bundle_dir / "pose.onnx").unlink()
    with pytest.raises(BundleError) as exc:
        Bundle.load(bundle_dir)
    msg = _one_line(exc)
    assert "graph 'pose'" in msg and "pose.onnx is missing" in msg


def test_graph_outside_bundle_refused(bundle_dir: Path) -> None:
    data = yaml.safe_load((bundle_dir / MANIFEST_NAME).read_text())
    data["graphs"]["pose"]["file"] = "../elsewhere.onnx"
    (bundle_dir / MANIFEST_NAME).write_text(yaml.safe_dump(data))
    with pytest.raises(BundleError, match="must be a path inside the bundle"):
        Bundle.load(bundle_dir)


def test_sha_mismatch(bundle_dir: Path) -> None:
    with open(bundle_dir / "pose.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError) as exc:
        Bundle.load(bundle_dir)
    msg = _one_line(exc)
    assert "does not match" in msg and "pose.onnx" in msg
    Bundle.load(bundle_dir, verify_sha256=False)  # explicit opt-out still loads


def test_manifest_uses_safe_yaml(bundle_dir: Path) -> None:
    # A python-object tag must be refused, not executed.
    (bundle_dir / MANIFEST_NAME).write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(BundleError, match="not valid YAML"):
        Bundle.load(bundle_dir)


def test_unique_bodyparts_need_multi_animal(bundle_dir: Path) -> None:
    _edit_manifest(bundle_dir, unique_bodyparts=["corner"])
    with pytest.raises(BundleError, match="unique_bodyparts need multi_animal"):
        Bundle.load(bundle_dir)
