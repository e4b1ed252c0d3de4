"""Tests for speechbrain_dsn.data.dataio (on-the-fly mixing pipelines, Section IV-C)."""

import csv

import pytest
import torch

from speechbrain_dsn.data.dataio import DATAIO_DEFAULTS, dataio_prep
from speechbrain_dsn.data.prepare import prepare_dsn_data
from tests.data_layouts import make_folder_corpus, make_wham_mixtures, make_wham_noise, make_wsj0_2mix

SEG = 8000


@pytest.fixture(scope="module")
def folder_save(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataio")
    save = root / "save"
    prepare_dsn_data(
        make_folder_corpus(root / "corpus"), save, num_train=6, num_valid=2, num_test=1, max_source_seconds=2.5
    )
    return save


def hparams(save, **extra):
    return {**DATAIO_DEFAULTS, "save_folder": str(save), "sample_rate": 8000, "training_signal_len": SEG, **extra}


def test_train_items_are_cropped_mixtures(folder_save):
    train, valid, tests = dataio_prep(hparams(folder_save))
    with open(folder_save / "train.csv", newline="") as handle:
        rows = {r["ID"]: r for r in csv.DictReader(handle)}
    for index in range(len(train)):
        item = train[index]
        assert set(item) == {"id", "mix_sig", "s1_sig", "s2_sig", "s1_vad", "s2_vad", "source_files"}
        assert item["mix_sig"].shape == item["s1_sig"].shape == item["s2_sig"].shape == (SEG,)
        assert torch.equal(item["mix_sig"], item["s1_sig"] + item["s2_sig"])
        row = rows[item["id"]]
        assert item["source_files"] == (row["s1_wav"], row["s2_wav"])  # fixed pairs
    uncropped = dataio_prep(hparams(folder_save, training_signal_len=None))[0][0]
    assert uncropped["mix_sig"].shape[0] > SEG


def test_valid_is_deterministic_and_training_is_seeded(folder_save):
    train, valid, _ = dataio_prep(hparams(folder_save))
    assert torch.equal(valid[0]["mix_sig"], valid[0]["mix_sig"])
    assert valid[0]["mix_sig"].shape == (SEG,)
    first = []
    for epoch in range(3):
        train.set_epoch(epoch)
        torch.manual_seed(epoch)  # the global torch seed plays no part
        first.append(train[0]["mix_sig"])
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])  # new mixtures per epoch
    again = dataio_prep(hparams(folder_save))[0]  # a fresh dataset (a worker, another DDP process)
    again.set_epoch(1)
    assert torch.equal(again[0]["mix_sig"], first[1]) and torch.equal(again[0]["mix_sig"], again[0]["mix_sig"])
    other_seed = dataio_prep(hparams(folder_save, seed=7))[0]
    other_seed.set_epoch(1)
    assert not torch.equal(other_seed[0]["mix_sig"], first[1])


def test_dynamic_mixing_draws_new_pairs_of_different_speakers(folder_save):
    train, _, _ = dataio_prep(hparams(folder_save, dynamic_mixing=True, speed_perturb=True))
    spk = {}
    with open(folder_save / "train.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            spk.update({row["s1_wav"]: row["s1_spk"], row["s2_wav"]: row["s2_spk"]})
    pairs = set()
    for epoch in range(8):
        train.set_epoch(epoch)
        item = train[0]
        pairs.add(item["source_files"])
        assert spk[item["source_files"][0]] != spk[item["source_files"][1]]
        assert torch.equal(item["mix_sig"], item["s1_sig"] + item["s2_sig"])
    assert len(pairs) >= 3


def test_test_sets_expose_conditions_and_boundaries(folder_save):
    _, _, tests = dataio_prep(hparams(folder_save))
    assert sorted(tests) == ["ov100", "ov25", "ov50", "ov75"]
    item = tests["ov50"][0]
    assert isinstance(item["overlap"], float) and item["overlap"] == pytest.approx(0.5, abs=0.1)
    assert all(isinstance(item[k], int) for k in ("s1_start", "s1_end", "s2_start", "s2_end"))
    assert item["s1_end"] <= item["mix_sig"].shape[0]
    assert torch.equal(item["mix_sig"], item["s1_sig"] + item["s2_sig"])
    only = dataio_prep(hparams(folder_save, test_conditions=["ov25"]))[2]
    assert list(only) == ["ov25"]
    with pytest.raises(FileNotFoundError, match="ov10"):
        dataio_prep(hparams(folder_save, test_conditions=["ov10"]))


def test_noisy_corpus_items_have_noise(tmp_path):
    root = make_wsj0_2mix(tmp_path / "wsj")
    make_wham_noise(tmp_path / "wsj" / "wham_noise", root)
    make_wham_mixtures(tmp_path / "wsj" / "wham", root)  # the released test set (condition `official`)
    prepare_dsn_data(root, tmp_path / "save", corpus="wham", test_overlaps=(1.0,), test_noise_activities=(0.5,))
    train, valid, tests = dataio_prep(hparams(tmp_path / "save", noise_activity_range=[1.0, 1.0]))
    official = tests["official"][0]  # the released files as they are, noise included
    assert official["mix_sig"].shape == official["noise_sig"].shape == official["s1_sig"].shape
    assert torch.allclose(
        official["mix_sig"], official["s1_sig"] + official["s2_sig"] + official["noise_sig"], atol=1e-3
    )
    item = train[0]
    assert torch.equal(item["mix_sig"], item["s1_sig"] + item["s2_sig"] + item["noise_sig"])
    assert torch.count_nonzero(item["noise_sig"]) > 0.95 * item["noise_sig"].numel()  # activity 1.0
    quiet = dataio_prep(hparams(tmp_path / "save", noise_activity_range=[0.0, 0.0]))[0][0]
    assert torch.count_nonzero(quiet["noise_sig"]) == 0
    test_item = tests["ov100_na50"][0]
    assert torch.equal(test_item["mix_sig"], test_item["s1_sig"] + test_item["s2_sig"] + test_item["noise_sig"])


def test_dynamic_pair_draw_is_uniform_over_other_speakers():
    import numpy as np

    from speechbrain_dsn.data.dataio import OnTheFlyMixer

    # speakers a (3 utterances), b (1), c (2); rows repeat utterances
    spk = {"a1": "a", "a2": "a", "a3": "a", "b1": "b", "c1": "c", "c2": "c"}
    pairs = [("a1", "b1"), ("c1", "a2"), ("a3", "c2"), ("b1", "c1")]
    pool = [
        {
            "s1_wav": x,
            "s1_spk": spk[x],
            "s1_start": 0,
            "s1_end": 1,
            "s2_wav": y,
            "s2_spk": spk[y],
            "s2_start": 0,
            "s2_end": 1,
        }
        for x, y in pairs
    ]
    mixer = OnTheFlyMixer(8000, pool=pool)
    assert sorted(u[0] for u in mixer.utterances) == sorted(spk)
    rng = np.random.default_rng(0)
    counts = {}
    for _ in range(6000):
        first, second = mixer._draw_pair(rng)
        assert first[1] != second[1]
        counts[(first[0], second[0])] = counts.get((first[0], second[0]), 0) + 1
    # every cross-speaker pair appears; given the first utterance, the
    # second is uniform over the other speakers' utterances
    expected = {(x, y) for x in spk for y in spk if spk[x] != spk[y]}
    assert set(counts) == expected
    for x in spk:
        row = [n for (f, _), n in counts.items() if f == x]
        assert max(row) / min(row) < 1.5
    with pytest.raises(ValueError, match="2 speakers"):
        OnTheFlyMixer(8000, pool=[dict(pool[0], s2_wav="a2", s2_spk="a")])


@pytest.fixture(scope="module")
def three_speaker_save(tmp_path_factory):
    from tests.data_layouts import ALL_SPEAKERS

    root = tmp_path_factory.mktemp("dataio3")
    save = root / "save"
    prepare_dsn_data(
        make_folder_corpus(root / "corpus", speakers=ALL_SPEAKERS),
        save,
        num_spks=3,
        num_train=3,
        num_valid=1,
        num_test=1,
        max_source_seconds=2.0,
        test_overlaps=(1.0, 0.5),
    )
    return save


def test_three_speaker_items_carry_every_source(three_speaker_save):
    train, valid, tests = dataio_prep(hparams(three_speaker_save, num_spks=3, dynamic_mixing=True))
    sources = ["s1", "s2", "s3"]
    for item in (train[0], valid[0]):
        assert set(item) == {"id", "mix_sig", "source_files"} | {f"{s}_{k}" for s in sources for k in ("sig", "vad")}
        assert torch.equal(item["mix_sig"], item["s1_sig"] + item["s2_sig"] + item["s3_sig"])
        assert len(item["source_files"]) == 3
    with open(three_speaker_save / "train.csv", newline="") as handle:
        speaker = {r[f"{s}_wav"]: r[f"{s}_spk"] for r in csv.DictReader(handle) for s in sources}
    for epoch in range(4):  # dynamic mixing draws three different speakers
        train.set_epoch(epoch)
        assert len({speaker[f] for f in train[0]["source_files"]}) == 3
    item = tests["ov50"][0]
    assert torch.equal(item["mix_sig"], item["s1_sig"] + item["s2_sig"] + item["s3_sig"])
    assert all(isinstance(item[f"{s}_{k}"], int) for s in sources for k in ("start", "end"))
    assert item["s3_vad"].shape == item["s3_sig"].shape


def test_num_spks_that_does_not_match_the_csv_is_a_clear_error(three_speaker_save):
    with pytest.raises(ValueError, match=r"train\.csv holds mixtures of 3 sources .*num_spks is 2"):
        dataio_prep(hparams(three_speaker_save, num_spks=2))


def test_one_speaker_in_noise_items(tmp_path):
    from tests.data_layouts import make_noise_folder

    save = tmp_path / "save"
    prepare_dsn_data(
        make_folder_corpus(tmp_path / "corpus"),
        save,
        num_spks=1,
        noise_folder=make_noise_folder(tmp_path / "noise"),
        num_train=2,
        num_valid=1,
        num_test=1,
        max_source_seconds=2.0,
        test_noise_activities=(1.0,),
    )
    train, valid, tests = dataio_prep(hparams(save, num_spks=1, noise_activity_range=[1.0, 1.0]))
    item = train[0]
    assert set(item) == {"id", "mix_sig", "s1_sig", "s1_vad", "noise_sig", "source_files"}
    assert torch.equal(item["mix_sig"], item["s1_sig"] + item["noise_sig"])
    assert torch.count_nonzero(item["noise_sig"]) > 0.95 * item["noise_sig"].numel()
    assert list(tests) == ["na100"]
    test_item = tests["na100"][0]
    assert torch.equal(test_item["mix_sig"], test_item["s1_sig"] + test_item["noise_sig"])
    assert "s2_sig" not in test_item
