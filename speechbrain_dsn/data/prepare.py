"""Data preparation for DSN training and overlap/noise-controlled evaluation (paper Sections IV-A, IV-C).

:func:`prepare_dsn_data` runs three stages, each a function of its own:

1. :func:`find_corpus` locates the files of the corpus (its
   :mod:`~speechbrain_dsn.data.registry` entry's layout finder), the noise
   files and the released test set, reading no audio;
2. :func:`validate_corpus` reads every source file once, drops the unusable
   ones (recorded with their problem) and, for a folder corpus, draws the
   speaker sets of the mixtures from the usable files;
3. :func:`write_corpus` builds the rows, materialises the test mixtures and
   writes every CSV (temporary files, renamed only once all are complete).

It writes, into ``save_folder`` (mixtures of ``num_spks`` sources; columns in
:mod:`speechbrain_dsn.data.columns`):

* ``train.csv`` / ``valid.csv``: one row per set of source files (mixed on
  the fly by :mod:`speechbrain_dsn.data.dataio`, so the overlap ratio and
  noise activity are drawn per example as in Section IV-C). Columns:
  ``ID, duration, s{i}_wav, s{i}_spk, s{i}_start, s{i}_end, s{i}_gain``
  (+ ``noise_wav``). The boundaries are the VAD speech boundaries in samples
  of the source at ``sample_rate`` (capped by ``max_source_seconds``), the
  gains the linear factors applied to the raw sources (``1.0`` for the
  released corpora, whose sources already carry their levels; active-RMS
  normalisation x drawn SIRs for the folder corpus). ``duration`` is the
  longest source region in seconds.
* ``test_ov{100,75,50,25}.csv`` (``test_ov100_na50.csv`` etc. with noise;
  ``test_na50.csv`` etc. for one source, whose conditions are the noise
  activities): fixed mixtures materialised as float WAVs under
  ``save_folder/test/<condition>/`` as ``<ID>_{mix,s1,...[,noise]}.wav``, with
  ``mix = s1 + s2 + ... (+ noise)`` exactly. Columns: ``ID, duration,
  mix_wav, s{i}_wav, overlap, target_overlap, s{i}_start, s{i}_end, sir_db,
  s{i}_spk`` (+ ``noise_wav, noise_activity, snr_db``); ``overlap`` is
  re-measured with the VAD on the placed sources (the mean over consecutive
  sources, :mod:`~speechbrain_dsn.data.mixing`; 0 for one source), and the
  boundaries are in mixture samples.
* ``test_official.csv`` (corpora with a released test set;
  ``official_test=False`` skips it): the released test mixtures as they are,
  untrimmed and not copied, so that results compare with published ones,
  with their released references. Same columns; the boundaries, ``overlap``,
  ``sir_db`` (and ``noise_activity``, ``snr_db``) are measured on the released
  files, ``target_overlap`` is empty.
* ``skipped_files.csv``: every source (or folder-corpus noise) file left out,
  and why (columns ``file, problem``): unreadable or empty files,
  multi-channel sources, files with NaN or infinite samples, and sources
  without speech. Each is also logged. Files at other sample rates are
  resampled (folder corpus; the released corpora must have ``sample_rate``).
* ``prepare_options.json``: the options of the last successful run. Preparation
  is skipped when it matches the current options; otherwise the previous
  outputs are removed and everything is redone.
"""

import json
import logging
import os
import pathlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from speechbrain_dsn.data import corpora
from speechbrain_dsn.data.columns import NOISE_TEST_FIELDS, source_fields, test_fields
from speechbrain_dsn.data.mixing import SIR_RANGE_DB
from speechbrain_dsn.data.registry import CORPORA, Corpus, get_corpus
from speechbrain_dsn.data.tables import (SourceReader, condition_name, official_rows, set_row, test_rows,
                                         write_all_atomically)

logger = logging.getLogger(__name__)

__all__ = ["CORPORA", "condition_name", "find_corpus", "load_options", "prepare_dsn_data", "validate_corpus",
           "write_corpus"]

OPTIONS_FILE = "prepare_options.json"
FORMAT_VERSION = 4  # 2: test_official.csv; 3: bad sources skipped, skipped_files.csv; 4: num_spks sources
REPORT_FILE = "skipped_files.csv"  # the files left out, and why (columns: file, problem)
OFFICIAL = "official"  # condition name of the released test set
FOLDER_DEFAULTS = CORPORA["folder"].defaults
PAIR_FIELDS = source_fields(2)  # the two-speaker columns (WSJ0-2mix, WHAM!, Libri2Mix)
TEST_FIELDS = test_fields(2)


@dataclass
class Found:
    """What :func:`find_corpus` located: file lists only, no audio read."""

    sets: Optional[Dict[str, List[corpora.SourceSet]]] = None  # released corpora: sets per split
    speakers: Optional[Dict[str, List[pathlib.Path]]] = None  # folder corpus: files per speaker
    noise: Optional[Dict[str, List[pathlib.Path]]] = None  # folder corpus: noise files per split (or "all")
    noise_folder: Optional[pathlib.Path] = None
    official: List[corpora.OfficialMixture] = field(default_factory=list)


@dataclass
class Validated:
    """What :func:`validate_corpus` kept: source sets whose every file is usable, per split."""

    sets: Dict[str, List[corpora.SourceSet]]
    official: List[corpora.OfficialMixture] = field(default_factory=list)


def _subset(items: list, num: Optional[int], seed: int) -> list:
    if num is None or num >= len(items):
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=num, replace=False))
    return [items[i] for i in keep]


def find_corpus(entry: Corpus, data_folder: pathlib.Path, sample_rate: int, num_spks: int, options: dict,
                sizes: Dict[str, Optional[int]], seed: int, official: bool) -> Found:
    """Stage 1: locate the source files, noise files and released test set (no audio read).

    The released test set is located first, so that a missing one fails
    before the long work. Released corpora are subset to ``sizes`` here.
    """
    found = Found()
    if official:
        found.official = _subset(entry.official(data_folder, sample_rate, num_spks, options), sizes["test"], seed)
        logger.info("official test set: %d mixtures from %s", len(found.official), found.official[0].mix.parent)
    located = entry.find(data_folder, sample_rate, num_spks, options)
    if entry.num_spks is None:
        found.speakers = located
        if options["noisy"]:
            found.noise_folder = pathlib.Path(options["noise_folder"])
            found.noise = corpora.find_noise_folder(found.noise_folder)
    else:
        found.sets = {split: _subset(items, sizes[split], seed) for split, items in located.items()}
    return found


def _draw_sets(files: Dict[str, List[pathlib.Path]], speakers: List[str], num: int, num_spks: int,
               rng: np.random.Generator, split: str) -> List[corpora.SourceSet]:
    """``num`` sets of files of ``num_spks`` different speakers, avoiding repeated sets."""
    sets, used = [], set()
    for i in range(num):
        for _ in range(20):  # avoid repeating a set while unused ones are likely left
            chosen = rng.choice(len(speakers), size=num_spks, replace=False)
            picked = [files[speakers[s]][int(rng.integers(len(files[speakers[s]])))] for s in chosen]
            if frozenset(picked) not in used:
                break
        used.add(frozenset(picked))
        name = "_".join([f"{split}{i:05d}"] + [p.stem for p in picked])
        sets.append(corpora.SourceSet(name, picked, [speakers[s] for s in chosen]))
    return sets


def validate_corpus(found: Found, reader: SourceReader, num_spks: int, sizes: Dict[str, Optional[int]],
                    seed: int) -> Validated:
    """Stage 2: read every file once and keep the usable ones (the others are recorded in ``reader``).

    A folder corpus's speakers are split disjointly into train/valid/test
    (each with at least ``max(2, num_spks)`` speakers), its noise files too,
    and the sets of each split are drawn from the usable files of that split.
    """
    if found.sets is not None:
        sets = {split: [item for item in items if reader.usable(item)] for split, items in found.sets.items()}
        return Validated(sets, found.official)
    usable = {}
    for spk, paths in found.speakers.items():
        good = [p for p in paths if reader.load(p) is not None]
        if good:
            usable[spk] = good
    split = corpora.split_speakers(list(usable), seed, min_per_split=max(2, num_spks))
    logger.info("folder corpus speakers: %s", split)
    noise = None
    if found.noise is not None:
        noise = {key: [p for p in paths if reader.usable_noise(p)] for key, paths in found.noise.items()}
        noise = corpora.split_noise(noise["all"], seed, found.noise_folder) if "all" in noise else noise
        for name, paths in noise.items():
            if not paths:
                raise ValueError(f"no usable noise files for the {name} split; see the warnings above")
    sets = {}
    for k, name in enumerate(corpora.SPLITS):
        sets[name] = _draw_sets(usable, split[name], sizes[name], num_spks, np.random.default_rng([seed, 10 + k]),
                                name)
        if noise is not None:
            rng = np.random.default_rng([seed, 40 + k])
            for item in sets[name]:
                item.noise = noise[name][int(rng.integers(len(noise[name])))]
    return Validated(sets, found.official)


def write_corpus(validated: Validated, reader: SourceReader, save_folder: pathlib.Path,
                 paths: Dict[str, pathlib.Path], num_spks: int, drawn_gains: bool, noisy: bool,
                 overlaps: Sequence[Optional[float]], activities: Optional[Sequence[float]], seed: int,
                 audio_subtype: str):
    """Stage 3: every CSV of :func:`prepare_dsn_data`, written together (temporary files + renames)."""
    fields = source_fields(num_spks) + (["noise_wav"] if noisy else [])
    tables = {}
    for k, split in enumerate(("train", "valid")):
        rng = np.random.default_rng([seed, 20 + k])
        rows = [set_row(item, reader, rng.uniform(*SIR_RANGE_DB, size=num_spks - 1) if drawn_gains else None)
                for item in validated.sets[split]]
        tables[paths[split]] = (fields, rows)
    test = test_rows(validated.sets["test"], reader, save_folder, seed, overlaps, activities,
                     draw_sir=drawn_gains, subtype=audio_subtype)
    test_columns = test_fields(num_spks) + (NOISE_TEST_FIELDS if noisy else [])
    for name, rows in test.items():
        tables[paths[f"test_{name}"]] = (test_columns, rows)
    if f"test_{OFFICIAL}" in paths:
        tables[paths[f"test_{OFFICIAL}"]] = (test_columns, official_rows(validated.official, reader.sample_rate,
                                                                         noisy))
    for path, (_, rows) in tables.items():
        if not rows:
            raise RuntimeError(f"no usable examples for {path.name}; see the warnings above")
    write_all_atomically(tables)


def _write_report(save_folder: pathlib.Path, skipped: Dict[pathlib.Path, str]):
    """``skipped_files.csv`` (temporary file + rename) and a summary in the log."""
    write_all_atomically({save_folder / REPORT_FILE: (["file", "problem"], [
        {"file": str(path), "problem": problem} for path, problem in sorted(skipped.items())])})
    if skipped:
        logger.warning("skipped %d unusable files, listed with their problems in %s", len(skipped),
                       save_folder / REPORT_FILE)


def _remove_previous_outputs(save_folder: pathlib.Path):
    """Delete the marker, the CSVs and the report of an earlier run (so none goes stale)."""
    (save_folder / REPORT_FILE).unlink(missing_ok=True)
    marker = save_folder / OPTIONS_FILE
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text()).get("outputs", [])
        except (json.JSONDecodeError, AttributeError):
            previous = []
        marker.unlink()
        for name in previous:
            (save_folder / name).unlink(missing_ok=True)


def prepare_dsn_data(
    data_folder,
    save_folder,
    corpus: str = "folder",
    sample_rate: int = 8000,
    noise_folder=None,
    seed: int = 1234,
    num_train: Optional[int] = None,
    num_valid: Optional[int] = None,
    num_test: Optional[int] = None,
    test_overlaps: Sequence[float] = (1.0, 0.75, 0.5, 0.25),
    test_noise_activities: Sequence[float] = (1.0, 0.5, 0.0),
    max_source_seconds: Optional[float] = None,
    libri2mix_noisy: bool = False,
    audio_subtype: str = "FLOAT",
    official_test: bool = True,
    wham_folder=None,
    skip_prep: bool = False,
    num_spks: Optional[int] = None,
    **kwargs,
) -> Dict[str, pathlib.Path]:
    """Prepare the train/valid CSVs and the fixed test conditions (idempotent).

    Arguments
    ---------
    data_folder : str or pathlib.Path
        Corpus root (see :mod:`speechbrain_dsn.data.corpora` for layouts).
    save_folder : str or pathlib.Path
        Where the CSVs, test audio and options marker go.
    corpus : str
        A name of :data:`~speechbrain_dsn.data.registry.CORPORA`: ``wsj0-2mix``,
        ``wham``, ``libri2mix``, ``wsj0-3mix``, ``libri3mix`` or ``folder``.
    sample_rate : int
        Working sample rate (selects ``wav8k``/``wav16k`` for the released
        corpora, whose files must have it; folder files are resampled).
    noise_folder : str, optional
        WHAM! ``wham_noise`` folder (default: searched beside ``data_folder``);
        for the folder corpus, a folder of noise files (``**/*.wav``, split
        into train/valid/test, or with ``train``/``valid``/``test`` folders),
        which adds noise to its mixtures. Required for ``num_spks=1``.
    seed : int
        Seed of every random choice (speaker split, sets, gains, placement).
    num_train, num_valid, num_test : int, optional
        Number of mixtures per split (test: per condition). ``None`` means all
        of a released corpus, and 24 / 4 / 3 for the folder corpus.
    test_overlaps : sequence of float
        Target overlap ratios of the test conditions (unused for one source).
    test_noise_activities : sequence of float
        Noise activities of the test conditions (corpora with noise only).
    max_source_seconds : float, optional
        Cap on each source's speech duration (``None``: no cap for released
        corpora, 5 s for the folder corpus).
    libri2mix_noisy : bool
        Use the LibriMix ``noise`` folder (Libri2Mix and Libri3Mix; otherwise clean).
    audio_subtype : str
        Soundfile subtype of the test WAVs (``FLOAT`` keeps sums exact).
    official_test : bool
        Also list the released test set as ``test_official.csv`` (condition
        ``official``; corpora that have one, ``num_test`` mixtures of it when set).
    wham_folder : str, optional
        Root of the WHAM! mixtures written by the WHAM! scripts (holding
        ``wav8k/min/tt/mix_both``); default: searched in and beside
        ``data_folder`` (``wham``, ``wham_wav``, ``wham_original``, ``wham_mix``).
    skip_prep : bool
        If True, do nothing.
    num_spks : int, optional
        Sources per mixture: 1 (speech enhancement in noise), 2, 3...; must
        match a released corpus (``None``: the corpus's own, 2 for a folder).
    **kwargs
        Unknown options are ignored with a warning (YAML forward compatibility).

    Returns
    -------
    dict
        CSV name (``train``, ``valid``, ``test_ov75``..., ``test_official``) to its path.

    Example
    -------
    >>> prepare_dsn_data("unused", "unused", skip_prep=True)
    {}
    """
    if skip_prep:
        return {}
    entry = get_corpus(corpus)
    num_spks = entry.resolve_num_spks(num_spks)
    if kwargs:
        logger.warning("prepare_dsn_data: ignoring unknown options %s", sorted(kwargs))
    noisy = entry.is_noisy({"noise_folder": noise_folder, "libri2mix_noisy": libri2mix_noisy})
    if num_spks == 1 and not noisy:
        raise ValueError(f"num_spks=1 is speech enhancement: its mixtures are one speaker plus noise, but corpus "
                         f"{corpus} has no noise here; pass noise_folder (--noise_folder <folder of noise files>)")
    # absolute paths in the CSVs, so they stay valid from any working directory
    data_folder, save_folder = pathlib.Path(data_folder).resolve(), pathlib.Path(save_folder).resolve()
    sizes = {"train": num_train, "valid": num_valid, "test": num_test}
    sizes = {k: v if v is not None else entry.defaults.get(f"num_{k}") for k, v in sizes.items()}
    cap = max_source_seconds if max_source_seconds is not None else entry.defaults.get("max_source_seconds")
    activities = [float(a) for a in test_noise_activities] if noisy else None
    # one source: no overlap, the conditions are the noise activities
    overlaps = [None] if num_spks == 1 else [float(o) for o in test_overlaps]
    names = [condition_name(ov, na) for ov in overlaps for na in (activities or [None])]
    official = bool(official_test) and entry.official is not None
    if official:
        names.append(OFFICIAL)
    outputs = ["train.csv", "valid.csv"] + [f"test_{n}.csv" for n in names]
    noise_root = str(pathlib.Path(noise_folder).resolve()) if noise_folder else None
    options = {
        "version": FORMAT_VERSION, "data_folder": str(data_folder), "corpus": corpus, "num_spks": num_spks,
        "sample_rate": sample_rate, "seed": seed, "sizes": sizes, "max_source_seconds": cap,
        "noise_folder": noise_root, "noisy": noisy,
        "test_overlaps": [float(o) for o in test_overlaps], "test_noise_activities": activities,
        "audio_subtype": audio_subtype, "official_test": official,
        "wham_folder": str(pathlib.Path(wham_folder).resolve()) if wham_folder and corpus == "wham" else None,
        "outputs": outputs,
    }
    paths = {name[:-4]: save_folder / name for name in outputs}
    marker = save_folder / OPTIONS_FILE
    if marker.is_file() and all(p.is_file() for p in paths.values()):
        try:
            if json.loads(marker.read_text()) == options:
                logger.info("data already prepared in %s, skipping", save_folder)
                return paths
        except json.JSONDecodeError:
            pass
    save_folder.mkdir(parents=True, exist_ok=True)
    _remove_previous_outputs(save_folder)
    logger.info("preparing %s data (%d sources per mixture) from %s into %s", corpus, num_spks, data_folder,
                save_folder)

    finder_options = {"noise_folder": noise_folder, "wham_folder": wham_folder, "seed": seed, "noisy": noisy}
    found = find_corpus(entry, data_folder, sample_rate, num_spks, finder_options, sizes, seed, official)
    reader = SourceReader(sample_rate, strict_rate=entry.strict_rate, max_source_seconds=cap)
    try:
        validated = validate_corpus(found, reader, num_spks, sizes, seed)
        write_corpus(validated, reader, save_folder, paths, num_spks, entry.drawn_gains, noisy, overlaps,
                     activities, seed, audio_subtype)
    except (ValueError, RuntimeError) as err:
        if not reader.skipped:
            raise
        _write_report(save_folder, reader.skipped)  # the skipped files may be why it failed
        if type(err) not in (ValueError, RuntimeError):
            raise
        raise type(err)(f"{err} ({len(reader.skipped)} files were skipped, listed with their "
                        f"problems in {save_folder / REPORT_FILE})") from err
    _write_report(save_folder, reader.skipped)
    _write_json_atomically(marker, options)
    logger.info("wrote %s", ", ".join(outputs))
    return paths


def load_options(save_folder) -> dict:
    """Options of the last successful preparation in ``save_folder`` (``{}`` if none).

    Example
    -------
    >>> import tempfile
    >>> load_options(tempfile.mkdtemp())
    {}
    """
    marker = pathlib.Path(save_folder) / OPTIONS_FILE
    return json.loads(marker.read_text()) if marker.is_file() else {}


def _write_json_atomically(path: pathlib.Path, payload: dict):
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(payload, indent=2))
    os.replace(temp, path)
