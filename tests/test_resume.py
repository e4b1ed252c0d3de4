"""Resuming after SIGKILL: atomic checkpoints, and every piece of training state continues.

The long end-to-end check (random kills, compared with an uninterrupted run)
is ``python benchmarks/kill_resume.py``.
"""

import csv
import os
import re
import signal
import subprocess
import sys

import pytest
import speechbrain as sb
import torch
import yaml

from speechbrain_dsn.checkpoints import AtomicCheckpointer, CheckpointLoadError, RNGState
from speechbrain_dsn.recipe import load_hparams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"N_encoder_out": 32, "num_layers": 1, "nhead": 4, "d_ffn": 64, "num_dual_blocks": 1, "chunk_size": 20}
INTERVAL, STEPS = 3, 8  # intra-epoch checkpoint every 3 steps; 8 steps per epoch (8 pairs, batch 1)


def _train_args(out):
    options = {
        **TINY,
        "number_of_epochs": 2,
        "num_train": STEPS,
        "num_valid": 1,
        "num_test": 1,
        "test_overlaps": "[1.0]",
        "test_conditions": "[ov100]",
        "batch_size": 1,
        "training_signal_len": 8000,
        "ckpt_interval_minutes": 0,
        "ckpt_interval_steps": INTERVAL,
        "gmacs_seconds": 0.25,
        "n_plots": 0,
        "save_audio": False,
        "step_log": out / "steps.csv",
        "output_folder": out,
    }
    args = ["hparams/dsn_2level.yaml"]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    return args


def _run_killed(out, file, count):
    """train.py, killed (SIGKILL) while writing the count-th FILE of a checkpoint; 0: never."""
    cmd = [sys.executable, os.path.join("tests", "kill_train.py"), file, str(count)] + _train_args(out)
    # one thread: tiny models gain nothing from more, and a busy CI machine slows them down a lot
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)


def _step_log(out):
    with open(out / "steps.csv") as fin:
        return [(int(r["epoch"]), int(r["step"]), r["loss"], r["gating"]) for r in csv.DictReader(fin)]


def _visible_checkpoints(save):
    return [p for p in save.iterdir() if p.name.startswith("CKPT")]


def test_sigkill_during_checkpoint_writes_then_rerun_continues_exactly(tmp_path):
    out = tmp_path / "run"
    # 1: killed while writing the end-of-epoch-1 checkpoint (intra-epoch ones after steps 3 and 6)
    first = _run_killed(out, "masknet.ckpt", 3)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    save = out / "save"
    for ckpt in _visible_checkpoints(save):  # the half-written checkpoint is not among them
        assert {"masknet.ckpt", "optimizer.ckpt", "counter.ckpt", "brain.ckpt"} <= {p.name for p in ckpt.iterdir()}
        torch.load(ckpt / "masknet.ckpt")
    assert [p.name for p in save.iterdir() if p.name.startswith(".tmp-CKPT")], "not killed inside a write"
    # 2: resumes from step 6 of epoch 1; killed while writing the checkpoint after step 6 of epoch 2
    second = _run_killed(out, "masknet.ckpt", 3)
    assert second.returncode == -signal.SIGKILL, second.stdout[-3000:] + second.stderr[-3000:]
    # 3: resumes from step 3 of epoch 2 and finishes
    third = _run_killed(out, "masknet.ckpt", 0)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert not [p for p in save.iterdir() if p.name.startswith(".")]  # leftovers removed

    # every step ran; a step run twice (before a kill, and again after the resume) gave the same
    # loss and gating, so parameters, optimizer, RNG and data position were all restored exactly
    rows = _step_log(out)
    done = {}
    for epoch, step, loss, gating in rows:
        assert done.setdefault((epoch, step), (loss, gating)) == (loss, gating), (epoch, step)
    assert sorted(done) == [(e, s) for e in (1, 2) for s in range(1, STEPS + 1)]
    assert len(rows) - len(done) == 2 + 3  # redone: steps 7-8 of epoch 1, 4-6 of epoch 2 (<= one interval each)

    # each epoch is logged once
    log = (out / "train_log.txt").read_text().splitlines()
    assert [line.split(",")[0] for line in log] == ["epoch: 1", "epoch: 2"]
    valid = [float(re.search(r"valid loss: ([-\d.e+]+)", line).group(1)) for line in log]
    for line in log:  # the epoch's statistics cover all its batches, before and after the kill
        train = {k: float(v) for k, v in re.findall(r"train ([\w.-]+): ([-\d.e+]+)", line)}
        assert train["loss"] == pytest.approx(train["complexity"] - train["si-snr"], abs=0.06), line

    # the final checkpoint holds the continued counter, early stopping, LR schedule and optimizer
    last = max(
        (c for c in _visible_checkpoints(save)), key=lambda c: yaml.safe_load((c / "CKPT.yaml").read_text())["unixtime"]
    )
    counter = yaml.safe_load((last / "counter.ckpt").read_text())
    assert counter["current_epoch"] == 2 and counter["should_stop"] is False
    assert counter["best_epoch"] == 1 + valid.index(min(valid))
    assert counter["best_score"] == pytest.approx(min(valid), abs=0.006)
    scheduler = torch.load(last / "lr_scheduler.ckpt")
    assert scheduler["losses"] == pytest.approx(valid, abs=0.006)  # epoch 1's loss came through the kill
    optimizer = torch.load(last / "optimizer.ckpt")
    assert max(float(s["step"]) for s in optimizer["state"].values()) == 2 * STEPS  # Adam's moments continued
    assert yaml.safe_load((last / "brain.ckpt").read_text())["optimizer_step"] == 2 * STEPS
    assert (last / "rng.ckpt").is_file()
    assert (out / "inference" / "masknet.ckpt").is_file()


# ---------------------------------------------------------------- checkpoint folders, simulated


@pytest.fixture
def recipe_checkpointer(tmp_path):
    """The checkpointer of the recipe YAML, with a tiny model."""
    hp = load_hparams(os.path.join(ROOT, "hparams", "dsn_2level.yaml"), {**TINY, "output_folder": str(tmp_path)})
    return hp["checkpointer"], hp


def test_recipe_uses_the_atomic_checkpointer_with_rng_state(recipe_checkpointer):
    checkpointer, _ = recipe_checkpointer
    assert isinstance(checkpointer, AtomicCheckpointer)
    assert any(isinstance(obj, RNGState) for obj in checkpointer.recoverables.values())


def test_folder_without_meta_is_not_a_checkpoint_and_leftovers_are_removed(recipe_checkpointer):
    checkpointer, hp = recipe_checkpointer
    good = checkpointer.save_checkpoint(meta={"loss": 1.0})
    # a folder holding files but no CKPT.yaml (a stock SpeechBrain save interrupted before its meta,
    # or a meta removed first by an interrupted deletion), and hidden folders of interrupted saves
    partial = checkpointer.checkpoints_dir / "CKPT+2099-01-01+00-00-00+00"
    partial.mkdir()
    (partial / "masknet.ckpt").write_bytes(b"PK\x03\x04half")
    for name in (".tmp-CKPT+2099-01-01+00-00-00+01", ".del-CKPT+2000-01-01+00-00-00+00"):
        (checkpointer.checkpoints_dir / name).mkdir()
    assert checkpointer.find_checkpoint() == good  # the newest *complete* one
    fresh = load_hparams(
        os.path.join(ROOT, "hparams", "dsn_2level.yaml"), {**TINY, "output_folder": hp["output_folder"]}
    )["checkpointer"]
    assert sorted(p.name for p in fresh.checkpoints_dir.iterdir()) == sorted([good.path.name, partial.name])
    assert fresh.recover_if_possible() == good


@pytest.mark.parametrize("damage", ["truncated", "missing", "empty"])
def test_damaged_checkpoint_is_a_clear_error_naming_the_file(recipe_checkpointer, damage):
    checkpointer, _ = recipe_checkpointer
    ckpt = checkpointer.save_checkpoint()
    target = ckpt.path / "masknet.ckpt"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "missing":
        target.unlink()
    else:
        target.write_bytes(b"")
    with pytest.raises(CheckpointLoadError, match=r"masknet\.ckpt.*Move .*CKPT\+.* out of"):
        checkpointer.recover_if_possible()


def test_unreadable_meta_is_skipped_with_a_warning(recipe_checkpointer, caplog):
    checkpointer, _ = recipe_checkpointer
    good = checkpointer.save_checkpoint()
    bad = checkpointer.save_checkpoint()
    (bad.path / "CKPT.yaml").write_text("unixtime: [unclosed\n")
    assert checkpointer.find_checkpoint() == good
    assert any("CKPT.yaml is unreadable" in r.getMessage() for r in caplog.records)


def test_a_failing_save_leaves_no_checkpoint(recipe_checkpointer):
    checkpointer, _ = recipe_checkpointer

    class Broken(torch.nn.Module):
        def state_dict(self, *args, **kwargs):
            raise OSError("disk full")

    checkpointer.add_recoverable("broken", Broken())
    with pytest.raises(OSError, match="disk full"):
        checkpointer.save_checkpoint()
    assert checkpointer.list_checkpoints() == []


def test_deleting_is_atomic_and_keeps_the_best(recipe_checkpointer):
    checkpointer, _ = recipe_checkpointer
    for loss in (3.0, 1.0, 2.0):
        checkpointer.save_and_keep_only(meta={"loss": loss}, min_keys=["loss"])
    losses = sorted(c.meta["loss"] for c in checkpointer.list_checkpoints())
    assert losses == [1.0, 2.0]  # the best and the most recent
    assert not [p for p in checkpointer.checkpoints_dir.iterdir() if p.name.startswith(".")]


def test_rng_state_restores_the_draws_and_old_checkpoints_without_it_still_load(recipe_checkpointer):
    checkpointer, _ = recipe_checkpointer
    ckpt = checkpointer.save_checkpoint()
    draws = (torch.rand(4), torch.randint(10, (4,)))
    checkpointer.recover_if_possible()
    assert torch.equal(torch.rand(4), draws[0]) and torch.equal(torch.randint(10, (4,)), draws[1])
    (ckpt.path / "rng.ckpt").unlink()  # a checkpoint written before RNGState existed
    with pytest.warns(UserWarning, match="rng"):
        checkpointer.recover_if_possible()


def test_early_stopping_state_survives_a_checkpoint(recipe_checkpointer, tmp_path):
    checkpointer, hp = recipe_checkpointer
    counter = hp["epoch_counter"]
    for epoch, loss in ((1, 5.0), (2, 4.0), (3, 4.5)):
        counter.current = epoch
        counter.update_metric(loss)
    checkpointer.save_checkpoint()
    fresh = load_hparams(
        os.path.join(ROOT, "hparams", "dsn_2level.yaml"), {**TINY, "output_folder": hp["output_folder"]}
    )
    fresh["checkpointer"].recover_if_possible()
    restored = fresh["epoch_counter"]
    assert (restored.current, restored.best_limit, restored.best_score) == (3, 2, 4.0)


def test_validation_checkpoint_holds_the_early_stopping_state_of_its_epoch(tmp_path):
    """The end-of-epoch checkpoint must include this epoch's validation loss in the stopper."""
    from speechbrain.nnet.schedulers import ReduceLROnPlateau
    from speechbrain.utils.epoch_loop import EpochCounterWithStopper
    from speechbrain.utils.train_logger import FileTrainLogger

    from speechbrain_dsn.brain import DSNBrain
    from tests.conftest import BRAIN_HPARAMS, MICRO_MODEL, tiny_model

    model = tiny_model([0.5, 1.0], **MICRO_MODEL)
    counter = EpochCounterWithStopper(limit=10, limit_to_stop=3, limit_warmup=0, direction="min")
    saved = []

    class Recorder:
        def save_and_keep_only(self, **kwargs):
            saved.append((counter.best_limit, counter.best_score))

    hparams = {
        **BRAIN_HPARAMS,
        "epoch_counter": counter,
        "lr_scheduler": ReduceLROnPlateau(),
        "train_logger": FileTrainLogger(str(tmp_path / "log.txt")),
    }
    brain = DSNBrain(
        {"encoder": model.encoder, "masknet": model.masknet, "decoder": model.decoder},
        opt_class=lambda p: torch.optim.Adam(p),
        hparams=hparams,
    )
    brain.checkpointer = Recorder()
    brain.optimizer = brain.opt_class(brain.modules.parameters())
    for epoch, loss in ((1, 5.0), (2, 4.0)):
        counter.current = epoch
        brain.on_stage_start(sb.Stage.TRAIN, epoch)
        brain.on_stage_end(sb.Stage.TRAIN, 6.0, epoch)
        brain.on_stage_start(sb.Stage.VALID, epoch)
        brain.on_stage_end(sb.Stage.VALID, loss, epoch)
    assert saved == [(1, 5.0), (2, 4.0)]


# ---------------------------------------------------------------- nothing already written is lost


def _export_setup(tmp_path):
    from speechbrain_dsn.inference import export_inference_folder

    hp = load_hparams(os.path.join(ROOT, "hparams", "dsn_2level.yaml"), {**TINY, "output_folder": str(tmp_path)})
    folder = tmp_path / "inference"
    export_inference_folder(hp["model"].get_config(), hp["modules"], str(folder), 8000)
    (folder / "notes.txt").write_text("the user's own file")
    return export_inference_folder, hp, folder


def _contents(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("failure", ["disk full while writing", "failure between renames"])
def test_interrupted_export_keeps_the_previous_inference_folder_whole(tmp_path, monkeypatch, failure):
    export, hp, folder = _export_setup(tmp_path)
    before = _contents(folder)
    with torch.no_grad():
        for p in hp["modules"]["masknet"].parameters():
            p.add_(1.0)
    if failure == "disk full while writing":
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if "masknet" in os.fspath(f):
                with open(f, "wb") as out:
                    out.write(b"PK\x03\x04half")
                raise OSError("disk full")
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
    else:
        calls = []

        def failing(real):
            def rename(src, dst):
                calls.append(src)
                if len(calls) == 2:
                    raise OSError("killed")
                return real(src, dst)

            return rename

        monkeypatch.setattr(os, "replace", failing(os.replace))
        monkeypatch.setattr(os, "rename", failing(os.rename))
    with pytest.raises(OSError):
        export(hp["model"].get_config(), hp["modules"], str(folder), 8000)
    monkeypatch.undo()
    assert _contents(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    export(
        hp["model"].get_config(), hp["modules"], str(folder), 8000
    )  # a later export replaces it whole, and keeps the user's file
    after = _contents(folder)
    assert after["notes.txt"] == before["notes.txt"] and after["masknet.ckpt"] != before["masknet.ckpt"]
    assert after["encoder.ckpt"] == before["encoder.ckpt"]
