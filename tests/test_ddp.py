"""Multi-process training (torchrun, DistributedDataParallel) on CPU with gloo.

The in-process tests run DDP in a one-process gloo group; the recipe test
launches ``torchrun --nproc_per_node=2 train.py ...`` and compares its
losses with one process (``benchmarks/ddp_check.py`` does the same with other
process counts and prints a report).  Nothing here is skipped: if torchrun or
gloo does not work, the tests fail.
"""

import importlib.util
import os

import pytest
import speechbrain as sb
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from speechbrain_dsn.brain import DSNBrain
from speechbrain_dsn.model import unwrap
from speechbrain_dsn.recipe import load_hparams
from tests.test_brain import _batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(
    N_encoder_out=16,
    nhead=2,
    d_ffn=32,
    num_layers=1,
    num_dual_blocks=1,
    chunk_size=10,
    gating_channels=8,
    gating_d_ffn=16,
    training_signal_len=4000,
)


@pytest.fixture
def one_process_group(monkeypatch):
    """A gloo group of one process, with the environment torchrun would set."""
    for key, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1").items():
        monkeypatch.setenv(key, value)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _ddp_brain(tmp_path, **overrides):
    hp = load_hparams(
        os.path.join(ROOT, "hparams", "dsn_3level.yaml"), {**TINY, "output_folder": str(tmp_path), **overrides}
    )
    brain = DSNBrain(
        modules=hp["modules"],
        opt_class=hp["optimizer"],
        hparams=hp,
        run_opts={"distributed_backend": "gloo", "device": "cpu"},
    )
    brain.on_fit_start()  # wraps the modules in DDP
    return brain


def test_gumbel_noise_option_reaches_the_gate(tmp_path):
    path = os.path.join(ROOT, "hparams", "dsn_3level.yaml")
    assert load_hparams(path, {**TINY, "output_folder": str(tmp_path)})["modules"]["masknet"].gating.noise
    hp = load_hparams(path, {**TINY, "output_folder": str(tmp_path), "gumbel_noise": False})
    assert hp["modules"]["masknet"].gating.noise is False


def test_unwrap():
    linear = torch.nn.Linear(2, 2)
    assert unwrap(linear) is linear
    assert unwrap(torch.nn.DataParallel(linear)) is linear


def test_ddp_brain_reads_the_masker_through_the_wrapper_and_trains_with_gating_dropout(one_process_group, tmp_path):
    brain = _ddp_brain(tmp_path)
    assert brain.find_unused_parameters  # from the DSN recipes
    assert isinstance(brain.modules.masknet, DistributedDataParallel)
    assert brain.masknet is brain.modules.masknet.module
    assert brain.levels == (0.125, 0.5, 1.0) and brain.is_dynamic
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.modules.train()
    # gating dropout (no gradient to the gate, nor to the widths above the level) between internal-gating steps
    for p in (0.0, 1.0, 1.0, 0.0):
        brain.hparams.gating_dropout = p
        loss = brain.fit_batch(_batch())
        assert torch.isfinite(loss)
        assert (brain.masknet.last_gates is None) == (p == 1.0)
    # the test stage runs the plain modules (no collective call from one process)
    est = brain.separate(_batch().mix_sig[0], utilization=0.5)
    assert est.shape == (2, 1600, 2) and float(brain.masknet.last_utilization.unique()) == 0.5


def test_without_find_unused_parameters_ddp_rejects_gating_dropout(one_process_group, tmp_path):
    brain = _ddp_brain(tmp_path, find_unused_parameters=False)
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.modules.train()
    brain.hparams.gating_dropout = 1.0
    brain.fit_batch(_batch())
    with pytest.raises(RuntimeError, match="finished reduction in the prior iteration"):
        brain.fit_batch(_batch())


def test_one_process_order_split_across_processes():
    """train.py's sampler under DDP: process r takes items r, r + N, ... of the
    one-process order, so the global batches are the one-process batches."""
    from speechbrain.dataio.sampler import DistributedSamplerWrapper, ReproducibleRandomSampler

    data = list(range(10))
    one = ReproducibleRandomSampler(data, seed=1234)
    one.set_epoch(3)
    ranks = [
        DistributedSamplerWrapper(ReproducibleRandomSampler(data, seed=1234), num_replicas=2, rank=r, shuffle=False)
        for r in (0, 1)
    ]
    for sampler in ranks:
        sampler.set_epoch(3)
    parts = [list(sampler) for sampler in ranks]
    assert [i for pair in zip(*parts) for i in pair] == list(one)


def _ddp_check():
    spec = importlib.util.spec_from_file_location("ddp_check", os.path.join(ROOT, "benchmarks", "ddp_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ddp_check_compares_step_logs():
    compare = _ddp_check().compare
    one = [
        dict(epoch="1", step="1", loss="30.0", gating="internal"),
        dict(epoch="1", step="2", loss="29.0", gating="external_0.5"),
    ]
    assert compare(one, one, 1e-5, 1e-5)["equal"]
    off = [dict(one[0]), dict(one[1], loss="29.01")]
    report = compare(one, off, 1e-5, 1e-5)
    assert not report["equal"] and report["max_abs_diff"] == pytest.approx(0.01)
    assert not compare(one, [one[0], dict(one[1], gating="internal")], 1e-5, 1e-5)["equal"]
    assert not compare(one, one[:1], 1e-5, 1e-5)["equal"]


def test_torchrun_two_processes_give_the_losses_of_one_process(tmp_path):
    """``torchrun --nproc_per_node=2 train.py hparams/dsn_3level.yaml --distributed_backend gloo --debug``
    with batch_size 1 per process gives, step by step, the losses of one process with
    batch_size 2 (benchmarks/ddp_check.py), through internal-gating and gating-dropout
    steps (no gradient for the gate, nor for the widths above the applied level).
    Deterministic gates: Gumbel noise is drawn per example from each process's RNG.
    The test stage runs once, on the main process, over every condition and mode."""
    check = _ddp_check()
    data, same = str(tmp_path / "data"), dict(gumbel_noise=False, gating_dropout=0.5, debug_batches=4)
    # a hang (e.g. processes waiting on each other in a collective call) fails, not stalls
    one, _, _ = check.train(str(tmp_path / "one"), data, batch_size=2, timeout=300, **same)
    two, _, _ = check.train(str(tmp_path / "two"), data, nproc=2, batch_size=1, timeout=300, **same)
    report = check.compare(one, two, rtol=1e-5, atol=1e-5)
    assert report["equal"], (report, one, two)
    assert report["num_steps"] == 8  # 2 debug epochs of 4 steps
    gating = [r["gating"] for r in one]
    assert "internal" in gating and any(g.startswith("external_") and g != "external_1" for g in gating), gating
    modes = ("internal", "external_0.125", "external_0.5", "external_1")
    expected = sorted((c, g) for c in ("ov100", "ov25", "all") for g in modes)
    assert check.summary_rows(str(tmp_path / "one")) == check.summary_rows(str(tmp_path / "two")) == expected
    assert os.path.isfile(tmp_path / "two" / "inference" / "masknet.ckpt")
