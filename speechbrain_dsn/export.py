"""Export a trained DSN at one utilization level: ONNX and TorchScript.

On devices where the level is chosen outside the model (Section V-D), only
the sub-network of that level runs.  :func:`static_subnetwork` cuts it out:
a static ``DSNSepformer`` of that width whose weights are the first heads and
neurons of the DSN (nothing else is kept), so it computes exactly what the
DSN computes under external gating at that level.  It is then exported:

    python -m speechbrain_dsn.export --model DIR --utilization 0.125 --out dsn_0125.onnx [--seconds 4]
    python -m speechbrain_dsn.export --model DIR --utilization 0.125 --out dsn_0125.pt --format torchscript

The ONNX graph maps a mixture [1, samples] to estimates [1, samples, num_spks]
for inputs of the exported length (``--seconds``; the chunking of the masker
is traced for that length): separate longer recordings in windows of that
length.  onnxruntime's result is compared with PyTorch's before the file is
kept, and the command prints the largest difference.
"""

import argparse
import os
import sys
import tempfile
import warnings

import torch

from .model import DSNSepformer

__all__ = ["export_onnx", "export_torchscript", "static_subnetwork"]


def static_subnetwork(model: DSNSepformer, utilization: float) -> DSNSepformer:
    """The static network of one level of ``model``, with the DSN's weights sliced to it.

    Example
    -------
    >>> dsn = DSNSepformer.paper_config([0.25, 1.0], N_encoder_out=32, chunk_size=10, num_dual_blocks=1,
    ...                                 num_layers=1, nhead=4, d_ffn=64).eval()
    >>> small = static_subnetwork(dsn, 0.25).eval()
    >>> mix = torch.randn(1, 800)
    >>> torch.allclose(small(mix), dsn(mix, utilization=0.25), atol=1e-5)
    True
    >>> sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in dsn.parameters())
    True
    """
    config = model.get_config()
    level = model.masknet.levels.index(float(utilization))
    static = DSNSepformer.from_config({**config, "utilization_levels": [model.masknet.levels[level]], "gating": None})
    source = model.state_dict()
    sliced = {}
    for name, target in static.state_dict().items():
        weight = source[name]
        if name.endswith(("in_proj_weight", "in_proj_bias")):
            # q, k and v rows are stacked: keep the first heads of each
            inner, keep = weight.shape[0] // 3, target.shape[0] // 3
            weight = weight.reshape(3, inner, -1)[:, :keep].reshape(target.shape)
        else:
            weight = weight[tuple(slice(0, n) for n in target.shape)]
        sliced[name] = weight.clone()
    static.load_state_dict(sliced)
    return static.train(model.training)


class _Fixed(torch.nn.Module):
    """mixture [1, L] -> estimates [1, L, spks] of a static network (a plain forward for exporters)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, mix):
        return self.model(mix)


def export_onnx(model: DSNSepformer, utilization: float, path: str, samples: int, opset: int = 17) -> float:
    """Writes the ONNX graph of one level; returns the max |onnxruntime - PyTorch| on a test input.

    The file appears only when onnxruntime loads it and agrees within 1e-3.
    """
    try:
        import onnxruntime
    except ImportError as err:
        raise RuntimeError('ONNX export needs onnx and onnxruntime: pip install "speechbrain-dsn[export]"') from err

    net = _Fixed(static_subnetwork(model, utilization).eval())
    mix = torch.randn(1, samples)
    tmp = path + ".tmp"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                net, (mix,), tmp, input_names=["mix"], output_names=["estimates"], opset_version=opset, dynamo=False
            )
        except Exception as err:  # the exporter's own errors: one message, no half-written file
            if os.path.exists(tmp):
                os.remove(tmp)
            raise RuntimeError(f"the ONNX exporter failed ({type(err).__name__}: {err})") from err
        reference = net(mix).numpy()
    try:
        session = onnxruntime.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {"mix": mix.numpy()})
        diff = float(abs(out - reference).max())
        if not diff < 1e-3:
            raise RuntimeError(f"onnxruntime disagrees with PyTorch by {diff:.2e}; {path} not written")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return diff


def export_torchscript(model: DSNSepformer, utilization: float, path: str, samples: int) -> float:
    """Writes a traced TorchScript module of one level; returns the max difference to eager."""
    net = _Fixed(static_subnetwork(model, utilization).eval())
    mix = torch.randn(1, samples)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, (mix,))
        diff = float((traced(mix) - net(mix)).abs().max())
    if not diff < 1e-3:
        raise RuntimeError(f"the traced module disagrees with eager PyTorch by {diff:.2e}; {path} not written")
    tmp = path + ".tmp"
    traced.save(tmp)
    os.replace(tmp, path)
    return diff


def load_model(folder: str):
    """(the DSN of an inference folder (format 2) with its weights, its sample rate)."""
    from .inference import DSNSeparation

    separator = DSNSeparation.from_hparams(source=folder, savedir=tempfile.mkdtemp(prefix="dsn_export_"))
    # the folder's modules are the model's own parts, loaded by the Pretrainer
    return separator.hparams.model.eval(), int(separator.hparams.sample_rate)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m speechbrain_dsn.export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="inference folder")
    parser.add_argument("--utilization", type=float, required=True, help="the level to export")
    parser.add_argument("--out", required=True, help="output file (.onnx or .pt)")
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    parser.add_argument("--seconds", type=float, default=4.0, help="input length of the exported graph")
    args = parser.parse_args(argv)
    try:
        if not os.path.isfile(os.path.join(args.model, "hyperparams.yaml")):
            raise FileNotFoundError(f"{args.model}: not an inference folder (no hyperparams.yaml)")
        model, sample_rate = load_model(args.model)
        samples = int(args.seconds * sample_rate)
        export = export_onnx if args.format == "onnx" else export_torchscript
        diff = export(model, args.utilization, args.out, samples)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 1
    print(f"{args.out}: U = {args.utilization:g}, {args.seconds:g} s inputs, max |difference to PyTorch| {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
