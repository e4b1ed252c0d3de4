"""A DSN level exported as its static sub-network: ONNX and TorchScript (issue 11)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from speechbrain_dsn.export import export_onnx, export_torchscript, static_subnetwork

from .conftest import tiny_model


@pytest.fixture(scope="module")
def dsn():
    torch.manual_seed(0)
    return tiny_model([0.25, 0.5, 1.0]).eval()


@pytest.mark.parametrize("u", [0.25, 0.5, 1.0])
def test_static_subnetwork_is_the_dsn_at_that_level_and_keeps_only_its_weights(dsn, u):
    small = static_subnetwork(dsn, u).eval()
    mix = torch.randn(2, 3000)
    with torch.no_grad():
        torch.testing.assert_close(small(mix), dsn(mix, utilization=u), atol=1e-5, rtol=0)
    layer = small.masknet.dual_mdl[0].intra_mdl.mdl.layers[0]
    assert layer.self_att.head_counts == [{0.25: 1, 0.5: 2, 1.0: 4}[u]]
    assert layer.pos_ffn.ffn[0].weight.shape[0] == int(64 * u)
    assert small.masknet.gating is None
    with pytest.raises(ValueError, match="not among the levels"):
        static_subnetwork(dsn, 0.3)


@pytest.mark.parametrize("u", [0.25, 1.0])
def test_onnxruntime_agrees_with_pytorch(dsn, tmp_path, u):
    onnxruntime = pytest.importorskip("onnxruntime")
    path = tmp_path / f"dsn_{u}.onnx"
    diff = export_onnx(dsn, u, str(path), samples=4000)
    assert diff < 1e-4 and path.is_file() and not (tmp_path / f"dsn_{u}.onnx.tmp").exists()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    mix = torch.randn(1, 4000)
    (out,) = session.run(None, {"mix": mix.numpy()})
    with torch.no_grad():
        expected = dsn(mix, utilization=u).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)


def test_torchscript_agrees_with_eager(dsn, tmp_path):
    path = tmp_path / "dsn.pt"
    assert export_torchscript(dsn, 0.5, str(path), samples=4000) < 1e-5
    loaded = torch.jit.load(str(path))
    mix = torch.randn(1, 4000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(mix), dsn(mix, utilization=0.5), atol=1e-5, rtol=0)


def test_export_cli_errors_are_one_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "speechbrain_dsn.export",
            "--model",
            str(tmp_path),
            "--utilization",
            "0.5",
            "--out",
            str(tmp_path / "x.onnx"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr and "not an inference folder" in done.stderr
