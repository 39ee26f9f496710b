"""The shape-computed antialiased resize (dlc_train.models.resize) and DLCRNet stride 32's export.

The resize must equal ``F.interpolate(..., mode="bilinear", antialias=True)`` (torchvision's
``resize``, which DeepLabCut's DLCRNet calls) in eager mode, and an exported DLCRNet stride-32
backbone must keep resizing correctly at frame sizes other than the traced one.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from dlc_train.models.backbones.dlcrnet import DLCRNet
from dlc_train.models.modules.coam import antialias_resize_matrix
from dlc_train.models.resize import antialias_weights, resize_bilinear_antialiased

# (in_h, in_w, out_h, out_w): down, up, mixed, odd, identity, and large factors.
SIZES = [(16, 16, 8, 8), (7, 9, 3, 4), (13, 11, 5, 7), (64, 48, 17, 13), (100, 3, 33, 3),
         (3, 5, 7, 11), (10, 10, 3, 30), (9, 9, 9, 9), (1, 1, 3, 3), (31, 17, 2, 2),
         (5, 6, 1, 2), (33, 65, 4, 9)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("in_h,in_w,out_h,out_w", SIZES)
def test_matches_interpolate_antialias(in_h, in_w, out_h, out_w):
    torch.manual_seed(0)
    x = torch.randn(2, 3, in_h, in_w)
    expected = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False,
                             antialias=True)
    got = resize_bilinear_antialiased(x, torch.tensor([out_h, out_w]))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("in_size,out_size", [(17, 1), (31, 2), (16, 8), (8, 16), (9, 4),
                                              (40, 3), (5, 5), (1, 4), (64, 17)])
def test_weights_match_the_fixed_size_matrix(in_size, out_size):
    """Same rows as CoAM's trace-time matrix (float64, PIL's definition), every size pair,
    including a 1-wide output: there PyTorch 2.13's CPU ``F.interpolate(antialias=True)``
    returns wrong values (every output row equals the first), so SIZES has none."""
    got = antialias_weights(torch.tensor(in_size), torch.tensor(out_size))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), antialias_resize_matrix(in_size, out_size),
                               rtol=0, atol=1e-6)


def test_upscaling_equals_plain_bilinear():
    """Why one formula serves both directions (DLCRNet upscales one bank, downscales the
    other): with a scale below 1 the triangle is plain bilinear with clamped edges."""
    torch.manual_seed(1)
    x = torch.randn(1, 2, 5, 7)
    plain = F.interpolate(x, size=(11, 13), mode="bilinear", align_corners=False)
    got = resize_bilinear_antialiased(x, torch.tensor([11, 13]))
    torch.testing.assert_close(got, plain, rtol=0, atol=1e-5)


def _export_backbone(backbone: torch.nn.Module, path) -> None:
    torch.onnx.export(backbone, torch.randn(1, 3, 64, 64), str(path), dynamo=False,
                      opset_version=17, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}})


def test_dlcrnet_stride32_exports_for_any_frame_size(tmp_path):
    """Traced at 64x64, run at other (odd, non-square) sizes: same features as eager, and the
    graph holds only operators TensorRT imports (no antialiased Resize)."""
    ort = pytest.importorskip("onnxruntime")
    from dlc_export.tensorrt_ops import check_tensorrt_operators

    torch.manual_seed(0)
    backbone = DLCRNet("resnet_tiny", output_stride=32, pretrained=False).eval()
    path = tmp_path / "dlcrnet32.onnx"
    _export_backbone(backbone, path)
    graph = onnx.load(path)
    check_tensorrt_operators(graph, where=path.name)      # raises on an unsupported op
    assert "Resize" not in {node.op_type for node in graph.graph.node}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for height, width in [(64, 64), (96, 128), (65, 97), (200, 150), (160, 64)]:
        x = torch.randn(2, 3, height, width)
        with torch.no_grad():
            expected = backbone(x).numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        assert got.shape == expected.shape, (height, width)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4, err_msg=f"{height}x{width}")


@pytest.mark.parametrize("output_stride,antialias", [(16, [False, False]), (32, [True, True])])
def test_dlcrnet_eager_resize_is_unchanged(output_stride, antialias):
    """Training and the parity reference still call torchvision's resize (F.interpolate,
    antialiased when downscaling): the matmul form is used only while tracing. Both banks end
    near stride 16 (h/16 - 1): upscaled at stride 16, downscaled at stride 32."""
    torch.manual_seed(0)
    backbone = DLCRNet("resnet_tiny", output_stride=output_stride, pretrained=False).eval()
    calls = []
    original = F.interpolate

    def spy(*args, **kwargs):
        calls.append(kwargs.get("antialias"))
        return original(*args, **kwargs)

    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "interpolate", spy)
        backbone(torch.randn(1, 3, 96, 96))
    assert calls == antialias
