#!/usr/bin/env python3
"""Recipe: train and evaluate a dynamic slimmable SepFormer (DSN).

Implements the training of Elminshawi et al., "Dynamic Slimmable Networks for
Efficient Speech Separation" (TASLP 2025), Section IV, and its evaluations
(Section V).  Runs data preparation, training and the test stage::

    python train.py hparams/dsn_3level.yaml                 # bundled demo corpus
    python train.py hparams/dsn_3level.yaml --corpus wsj0-2mix --data_folder /corpora/wsj0-mix
    python train.py hparams/static.yaml --utilization_levels "[0.5]" --experiment_name static_0.5
    torchrun --nproc_per_node=4 train.py hparams/dsn_2level.yaml --distributed_backend nccl --data_folder ...

``--debug`` runs a few batches of two epochs; ``--test_only`` skips training
and evaluates the best checkpoint.  Under torchrun ``batch_size`` is per
process, the training order is the one-process order split across the
processes, and the test stage runs on the main process alone.
"""

import os
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.sampler import ReproducibleRandomSampler
from speechbrain.utils.distributed import MainProcessContext, run_on_main
from speechbrain.utils.logger import get_logger

from speechbrain_dsn.brain import DSNBrain
from speechbrain_dsn.data.dataio import dataio_prep
from speechbrain_dsn.data.prepare import prepare_dsn_data
from speechbrain_dsn.evaluation_stage import evaluate_test_sets
from speechbrain_dsn.inference import export_inference_folder
from speechbrain_dsn.recipe import load_pretrained_separator

logger = get_logger(__name__)


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)

    if hparams["test_checkpoint"] not in ("best", "last"):
        raise ValueError(f"test_checkpoint must be 'best' or 'last', got {hparams['test_checkpoint']!r}")
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=hparams_file, overrides=overrides
    )

    run_on_main(
        prepare_dsn_data,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["data_save_folder"],
            "corpus": hparams["corpus"],
            "num_spks": hparams["num_spks"],
            "sample_rate": hparams["sample_rate"],
            "noise_folder": hparams["noise_folder"],
            "seed": hparams["seed"],
            "num_train": hparams["num_train"],
            "num_valid": hparams["num_valid"],
            "num_test": hparams["num_test"],
            "test_overlaps": hparams["test_overlaps"],
            "test_noise_activities": hparams["test_noise_activities"],
            "max_source_seconds": hparams["max_source_seconds"],
            "official_test": hparams["official_test"],
            "wham_folder": hparams["wham_folder"],
            "skip_prep": hparams["skip_prep"],
        },
    )
    if hparams["pretrained_separator"]:
        # warm start (a stock SepFormer or a DSN); a checkpoint of this run, if any, wins in fit()
        load_pretrained_separator(
            hparams["modules"],
            hparams["pretrained_separator"],
            os.path.join(hparams["save_folder"], "pretrained_separator"),
        )
    train_data, valid_data, test_sets = dataio_prep({**hparams, "save_folder": hparams["data_save_folder"]})

    brain = DSNBrain(
        modules=hparams["modules"],
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    loader_opts = {"batch_size": hparams["batch_size"], "num_workers": hparams["num_workers"]}
    # One process: SpeechBrain shuffles with ReproducibleRandomSampler(seed).  Under DDP it
    # would reshuffle with a DistributedSampler of its own; given this sampler, each process
    # takes every N-th item of the same order, so N processes with batch_size b see the
    # global batches of one process with batch_size N * b.
    shuffle = (
        {"sampler": ReproducibleRandomSampler(train_data, seed=hparams["seed"])}
        if brain.distributed_launch
        else {"shuffle": True}
    )
    # Brain.fit returns at once under --test_only
    brain.fit(
        brain.hparams.epoch_counter,
        train_data,
        valid_data,
        # The training loader draws its worker seeds from a generator of its own, not from torch's
        # global one: the checkpoints carry the global generators (RNGState), and a run resumed in
        # the middle of an epoch then draws the gating-dropout levels and Gumbel noise of the run
        # it continues (the mixtures are keyed by item, MixtureDataset).
        train_loader_kwargs={**loader_opts, **shuffle, "generator": torch.Generator().manual_seed(hparams["seed"])},
        valid_loader_kwargs=loader_opts,
    )

    # The test stage runs on the main process alone (the others end here); the context
    # turns SpeechBrain's collective calls (barriers, broadcasts) into no-ops on it.
    if sb.utils.distributed.if_main_process():
        with MainProcessContext():
            # best: lowest validation loss (the paper's early stopping); last: the final epoch
            min_key = {"best": "loss", "last": None}[hparams["test_checkpoint"]]
            evaluate_test_sets(brain, test_sets, hparams["output_folder"], min_key=min_key)
            folder = export_inference_folder(
                hparams["model"].get_config(),
                hparams["modules"],
                os.path.join(hparams["output_folder"], "inference"),
                hparams["sample_rate"],
            )
        logger.info("inference folder written to %s", folder)


if __name__ == "__main__":
    main(sys.argv[1:])
