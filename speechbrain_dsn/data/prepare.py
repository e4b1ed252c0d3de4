"""Data preparation for DSN training and overlap/noise-controlled evaluation (paper Sections IV-A, IV-C).

``prepare_dsn_data`` writes, into ``save_folder``:

* ``train.csv`` / ``valid.csv``: one row per source *pair*, pointing at the raw
  source files (mixed on the fly by :mod:`speechbrain_dsn.data.dataio`, so the
  overlap ratio and noise activity are drawn per example as in Section IV-C).
  Columns: ``ID, duration, s1_wav, s2_wav, s1_spk, s2_spk, s1_start, s1_end,
  s2_start, s2_end, s1_gain, s2_gain`` (+ ``noise_wav``). The boundaries are the
  VAD speech boundaries in samples of the source at ``sample_rate`` (capped by
  ``max_source_seconds``), the gains the linear factors applied to the raw
  sources (``1.0`` for WSJ0-2mix/LibriMix, whose sources already carry their
  SIR; active-RMS normalisation x SIR in [0, 5] dB for the folder corpus).
  ``duration`` is the longer source region in seconds.
* ``test_ov{100,75,50,25}.csv`` (``test_ov100_na50.csv`` etc. with noise): fixed
  mixtures materialised as float WAVs under ``save_folder/test/<condition>/``
  as ``<ID>_{mix,s1,s2[,noise]}.wav``, with ``mix = s1 + s2 (+ noise)`` exactly.
  Columns: ``ID, duration, mix_wav, s1_wav, s2_wav, overlap, target_overlap,
  s1_start, s1_end, s2_start, s2_end, sir_db, s1_spk, s2_spk`` (+ ``noise_wav,
  noise_activity, snr_db``); ``overlap`` is re-measured with the VAD on the placed sources and
  the boundaries are in mixture samples.
* ``test_official.csv`` (WSJ0-2mix, WHAM!, Libri2Mix; ``official_test=False``
  skips it): the released test mixtures as they are, untrimmed and not
  copied, so that results compare with published ones (WSJ0-2mix ``tt/mix``,
  WHAM! ``tt/mix_both`` with its ``noise``, Libri2Mix ``test/mix_clean`` or,
  noisy, ``test/mix_both``), with their released ``s1``/``s2`` references.
  Same columns as the other test CSVs; the boundaries, ``overlap``,
  ``sir_db`` (and ``noise_activity``, ``snr_db``) are measured on the
  released files, ``target_overlap`` is empty.
* ``skipped_files.csv``: every source file left out, and why (columns
  ``file, problem``): unreadable or empty files, multi-channel files, files
  with NaN or infinite samples, and files without speech (silent, or too
  short to hold the 50 ms speech run of :func:`~speechbrain_dsn.data.vad.speech_boundaries`).
  Each is also logged.  Files at other sample rates are resampled (folder
  corpus; the released corpora must have ``sample_rate``).
* ``prepare_options.json``: the options of the last successful run. Preparation
  is skipped when it matches the current options; otherwise the previous
  outputs are removed and everything is redone. All CSVs are written to
  temporary files and renamed only once every one of them is complete.
"""

import csv
import json
import logging
import os
import pathlib
from typing import Dict, List, Optional, Sequence

import numpy as np

from speechbrain_dsn.data import corpora
from speechbrain_dsn.data.audio import BadAudioError, load_audio, speech_region, write_audio
from speechbrain_dsn.data.mixing import (SIR_RANGE_DB, SNR_RANGE_DB, SPEECH_LEVEL, active_rms, interval_overlap,
                                         mix_sources)
from speechbrain_dsn.data.vad import speech_boundaries

logger = logging.getLogger(__name__)

CORPORA = ("wsj0-2mix", "wham", "libri2mix", "folder")
OPTIONS_FILE = "prepare_options.json"
FORMAT_VERSION = 3  # 2: test_official.csv; 3: NaN/Inf and speechless sources skipped, skipped_files.csv
REPORT_FILE = "skipped_files.csv"  # the source files left out, and why (columns: file, problem)
OFFICIAL = "official"  # condition name of the released test set
# folder-corpus defaults sized for the bundled demo (a few CPU minutes end to end)
FOLDER_DEFAULTS = {"num_train": 24, "num_valid": 4, "num_test": 3, "max_source_seconds": 5.0}
PAIR_FIELDS = ["ID", "duration", "s1_wav", "s2_wav", "s1_spk", "s2_spk", "s1_start", "s1_end",
               "s2_start", "s2_end", "s1_gain", "s2_gain"]
TEST_FIELDS = ["ID", "duration", "mix_wav", "s1_wav", "s2_wav", "overlap", "target_overlap",
               "s1_start", "s1_end", "s2_start", "s2_end", "sir_db", "s1_spk", "s2_spk"]
NOISE_TEST_FIELDS = ["noise_wav", "noise_activity", "snr_db"]


def condition_name(overlap: float, noise_activity: Optional[float] = None) -> str:
    """Name of a test condition, e.g. ``ov75`` or ``ov100_na50``.

    Example
    -------
    >>> condition_name(0.75), condition_name(1.0, 0.5)
    ('ov75', 'ov100_na50')
    """
    name = f"ov{int(round(100 * overlap))}"
    return name if noise_activity is None else f"{name}_na{int(round(100 * noise_activity))}"


class _Sources:
    """Loads sources once, caching their capped VAD boundaries; bad files are skipped and recorded."""

    def __init__(self, sample_rate: int, strict_rate: bool, max_source_seconds: Optional[float]):
        self.sample_rate, self.strict_rate, self.cap = sample_rate, strict_rate, max_source_seconds
        self.bounds: Dict[pathlib.Path, tuple] = {}
        self.skipped: Dict[pathlib.Path, str] = {}  # file -> problem

    def _skip(self, path: pathlib.Path, problem: str):
        self.skipped[path] = problem
        logger.warning("skipping source %s: %s", path, problem)

    def load(self, path: pathlib.Path):
        """Return ``(signal, capped_bounds)`` or ``None`` (with a warning) for a bad file."""
        if path in self.skipped:
            return None
        try:
            signal = load_audio(path, self.sample_rate, resample=not self.strict_rate)
        except (BadAudioError, FileNotFoundError) as err:
            self._skip(path, str(err))
            return None
        if path not in self.bounds:
            found = speech_boundaries(signal, self.sample_rate, fallback=False)
            if found is None:
                self._skip(path, f"no speech found in {path} ({len(signal) / self.sample_rate:.3g} s; silent, "
                                 "or shorter than a 50 ms run of speech)")
                return None
            start, end = found
            if self.cap is not None and end - start > self.cap * self.sample_rate:
                # last speech sample before the cap, so the bounds match what the VAD
                # will measure on the capped source once it is mixed
                cut = start + int(round(self.cap * self.sample_rate))
                end = speech_boundaries(signal[:cut], self.sample_rate)[1]
            self.bounds[path] = (start, end)
        return signal, self.bounds[path]


def _pair_row(pair: corpora.SourcePair, sources: _Sources, sir_db: Optional[float]) -> Optional[dict]:
    """CSV row of a training/validation pair; ``sir_db=None`` keeps raw gains of 1."""
    loaded = [sources.load(pair.s1), sources.load(pair.s2)]
    if any(item is None for item in loaded):
        return None
    (x1, b1), (x2, b2) = loaded
    gains = [1.0, 1.0]
    if sir_db is not None:
        gains = [SPEECH_LEVEL / max(active_rms(x, b), 1e-8) * 10 ** (sign * sir_db / 40)
                 for x, b, sign in ((x1, b1, 1), (x2, b2, -1))]
    sr = sources.sample_rate
    regions = [speech_region(len(x), b, sr, sources.cap) for x, b in loaded]
    lengths = [hi - lo for lo, hi, _ in regions]
    row = {"ID": pair.id, "duration": round(max(lengths) / sr, 3), "s1_wav": str(pair.s1),
           "s2_wav": str(pair.s2), "s1_spk": pair.s1_spk, "s2_spk": pair.s2_spk,
           "s1_start": b1[0], "s1_end": b1[1], "s2_start": b2[0], "s2_end": b2[1],
           "s1_gain": f"{gains[0]:.6g}", "s2_gain": f"{gains[1]:.6g}"}
    if pair.noise is not None:
        row["noise_wav"] = str(pair.noise)
    return row


def _folder_pairs(data_folder, seed: int, sources: _Sources, sizes: Dict[str, int]) -> Dict[str, List[corpora.SourcePair]]:
    """Random different-speaker pairs from disjoint speaker splits of a folder corpus."""
    files = corpora.find_folder(data_folder)
    usable = {}
    for spk, paths in files.items():
        good = [p for p in paths if sources.load(p) is not None]
        if good:
            usable[spk] = good
    split = corpora.split_speakers(list(usable), seed)
    logger.info("folder corpus speakers: %s", split)
    out = {}
    for k, name in enumerate(corpora.SPLITS):
        rng = np.random.default_rng([seed, 10 + k])
        spks, pairs, used = split[name], [], set()
        for i in range(sizes[name]):
            for _ in range(20):  # avoid repeating a pair while unused ones are likely left
                a, b = rng.choice(len(spks), size=2, replace=False)
                f1 = usable[spks[a]][int(rng.integers(len(usable[spks[a]])))]
                f2 = usable[spks[b]][int(rng.integers(len(usable[spks[b]])))]
                if frozenset((f1, f2)) not in used:
                    break
            used.add(frozenset((f1, f2)))
            pairs.append(corpora.SourcePair(f"{name}{i:05d}_{f1.stem}_{f2.stem}", f1, f2, spks[a], spks[b]))
        out[name] = pairs
    return out


def _subset(pairs: list, num: Optional[int], seed: int) -> list:
    if num is None or num >= len(pairs):
        return pairs
    keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=num, replace=False))
    return [pairs[i] for i in keep]


def _test_rows(pairs, sources: _Sources, save_folder: pathlib.Path, seed: int, overlaps: Sequence[float],
               activities: Optional[Sequence[float]], draw_sir: bool, subtype: str) -> Dict[str, List[dict]]:
    """Materialise every test condition; the same pair keeps its SIR/SNR across conditions."""
    sr = sources.sample_rate
    conditions = [(ov, na) for ov in overlaps for na in (activities if activities is not None else [None])]
    rows = {condition_name(ov, na): [] for ov, na in conditions}
    for i, pair in enumerate(pairs):
        loaded = [sources.load(pair.s1), sources.load(pair.s2)]
        if any(item is None for item in loaded):
            continue
        cropped = []
        for x, b in loaded:
            lo, hi, rel = speech_region(len(x), b, sr, sources.cap)
            cropped.append((x[lo:hi], rel))
        item_rng = np.random.default_rng([seed, 1, i])
        sir = float(item_rng.uniform(*SIR_RANGE_DB)) if draw_sir else None
        snr = float(item_rng.uniform(*SNR_RANGE_DB))
        noise = None
        if activities is not None:
            noise = load_audio(pair.noise, sr, first_channel=True)
        for k, (ov, na) in enumerate(conditions):
            name = condition_name(ov, na)
            m = mix_sources(cropped[0][0], cropped[1][0], sr, ov, cropped[0][1], cropped[1][1], sir_db=sir,
                            gains=None if draw_sir else (1.0, 1.0), noise=noise,
                            noise_activity=na if na is not None else 1.0, snr_db=snr,
                            rng=np.random.default_rng([seed, 2, i, k]), measure_overlap=True)
            folder = save_folder / "test" / name
            paths = {key: folder / f"{pair.id}_{key}.wav" for key in ("mix", "s1", "s2")}
            signals = {"mix": m.mix, "s1": m.s1, "s2": m.s2}
            if noise is not None:
                paths["noise"], signals["noise"] = folder / f"{pair.id}_noise.wav", m.noise
            for key, path in paths.items():
                write_audio(path, signals[key], sr, subtype)
            row = {"ID": pair.id, "duration": round(len(m.mix) / sr, 3), "mix_wav": str(paths["mix"]),
                   "s1_wav": str(paths["s1"]), "s2_wav": str(paths["s2"]), "overlap": round(m.overlap, 4),
                   "target_overlap": ov, "s1_start": m.s1_bounds[0], "s1_end": m.s1_bounds[1],
                   "s2_start": m.s2_bounds[0], "s2_end": m.s2_bounds[1], "sir_db": round(m.sir_db, 3),
                   "s1_spk": pair.s1_spk, "s2_spk": pair.s2_spk}
            if noise is not None:
                row.update(noise_wav=str(paths["noise"]), noise_activity=round(m.noise_activity, 4),
                           snr_db=round(m.snr_db, 3) if m.snr_db is not None else "")
            rows[name].append(row)
    return rows


def _official_rows(mixtures: List[corpora.OfficialMixture], sample_rate: int, noisy: bool) -> List[dict]:
    """Rows of the released test mixtures, measured on the files as they are.

    Every file must have ``sample_rate`` and the files of one mixture the same
    length; any problem is an error (a partial official set would not compare).
    """
    rows = []
    for m in mixtures:
        files = {"mix": m.mix, "s1": m.s1, "s2": m.s2}
        if noisy:
            files["noise"] = m.noise
        signals = {key: load_audio(path, sample_rate, resample=False) for key, path in files.items()}
        for key in files:
            if len(signals[key]) != len(signals["mix"]):
                raise ValueError(
                    f"official test mixture {m.mix} has {len(signals['mix'])} samples but its {key} "
                    f"reference {files[key]} has {len(signals[key])}; the released files must match")
        s1, s2 = signals["s1"], signals["s2"]
        b1, b2 = speech_boundaries(s1, sample_rate), speech_boundaries(s2, sample_rate)
        sir = 20 * np.log10(max(active_rms(s1, b1), 1e-12) / max(active_rms(s2, b2), 1e-12))
        row = {"ID": m.id, "duration": round(len(signals["mix"]) / sample_rate, 3), "mix_wav": str(m.mix),
               "s1_wav": str(m.s1), "s2_wav": str(m.s2), "overlap": round(interval_overlap(b1, b2), 4),
               "target_overlap": "", "s1_start": b1[0], "s1_end": b1[1], "s2_start": b2[0], "s2_end": b2[1],
               "sir_db": round(float(sir), 3), "s1_spk": m.s1_spk, "s2_spk": m.s2_spk}
        if noisy:
            noise = signals["noise"]
            # SNR: speech inside the union of the speech boundaries over the whole noise file
            union = (min(b1[0], b2[0]), max(b1[1], b2[1]))
            snr = 20 * np.log10(max(active_rms(s1 + s2, union), 1e-12)
                                / max(active_rms(noise, (0, len(noise))), 1e-12))
            row.update(noise_wav=str(m.noise), noise_activity=round(np.count_nonzero(noise) / len(noise), 4),
                       snr_db=round(float(snr), 3))
        rows.append(row)
    return rows


def _write_csv(path: pathlib.Path, fields: List[str], rows: List[dict]):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _write_all_atomically(tables: Dict[pathlib.Path, tuple]):
    """Write every CSV to a temporary file first, then rename them all."""
    temps = {path: path.with_name(path.name + ".tmp") for path in tables}
    try:
        for path, (fields, rows) in tables.items():
            _write_csv(temps[path], fields, rows)
        for path, temp in temps.items():
            os.replace(temp, path)
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def _write_report(save_folder: pathlib.Path, skipped: Dict[pathlib.Path, str]):
    """``skipped_files.csv`` (temporary file + rename) and a summary in the log."""
    _write_all_atomically({save_folder / REPORT_FILE: (["file", "problem"], [
        {"file": str(path), "problem": problem} for path, problem in sorted(skipped.items())])})
    if skipped:
        logger.warning("skipped %d unusable source files, listed with their problems in %s", len(skipped),
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
        One of ``wsj0-2mix``, ``wham``, ``libri2mix``, ``folder``.
    sample_rate : int
        Working sample rate (selects ``wav8k``/``wav16k`` for the official
        corpora, whose files must have it; folder files are resampled).
    noise_folder : str, optional
        WHAM! ``wham_noise`` folder (default: searched beside ``data_folder``).
    seed : int
        Seed of every random choice (speaker split, pairs, gains, placement).
    num_train, num_valid, num_test : int, optional
        Number of pairs per split (test: per condition). ``None`` means all
        pairs of an official corpus, and 24 / 4 / 3 for the folder corpus.
    test_overlaps : sequence of float
        Target overlap ratios of the test conditions.
    test_noise_activities : sequence of float
        Noise activities of the test conditions (corpora with noise only).
    max_source_seconds : float, optional
        Cap on each source's speech duration (``None``: no cap for official
        corpora, 5 s for the folder corpus).
    libri2mix_noisy : bool
        Use the Libri2Mix ``noise`` folder (otherwise Libri2Mix is clean).
    audio_subtype : str
        Soundfile subtype of the test WAVs (``FLOAT`` keeps sums exact).
    official_test : bool
        Also list the released test set as ``test_official.csv`` (condition
        ``official``; WSJ0-2mix, WHAM! and Libri2Mix only, ``num_test``
        mixtures of it when set).
    wham_folder : str, optional
        Root of the WHAM! mixtures written by the WHAM! scripts (holding
        ``wav8k/min/tt/mix_both``); default: searched in and beside
        ``data_folder`` (``wham``, ``wham_wav``, ``wham_original``, ``wham_mix``).
    skip_prep : bool
        If True, do nothing.
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
    if corpus not in CORPORA:
        raise ValueError(f"corpus must be one of {CORPORA}, got {corpus!r}")
    if kwargs:
        logger.warning("prepare_dsn_data: ignoring unknown options %s", sorted(kwargs))
    # absolute paths in the CSVs, so they stay valid from any working directory
    data_folder, save_folder = pathlib.Path(data_folder).resolve(), pathlib.Path(save_folder).resolve()
    defaults = FOLDER_DEFAULTS if corpus == "folder" else {}
    sizes = {"train": num_train, "valid": num_valid, "test": num_test}
    sizes = {k: v if v is not None else defaults.get(f"num_{k}") for k, v in sizes.items()}
    cap = max_source_seconds if max_source_seconds is not None else defaults.get("max_source_seconds")
    noisy = corpus == "wham" or (corpus == "libri2mix" and libri2mix_noisy)
    activities = [float(a) for a in test_noise_activities] if noisy else None
    names = [condition_name(ov, na) for ov in test_overlaps for na in (activities or [None])]
    official = bool(official_test) and corpus != "folder"
    if official:
        names.append(OFFICIAL)
    outputs = ["train.csv", "valid.csv"] + [f"test_{n}.csv" for n in names]
    options = {
        "version": FORMAT_VERSION, "data_folder": str(data_folder), "corpus": corpus,
        "sample_rate": sample_rate, "seed": seed, "sizes": sizes, "max_source_seconds": cap,
        "noise_folder": str(pathlib.Path(noise_folder).resolve()) if noise_folder else None,
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
    logger.info("preparing %s data from %s into %s", corpus, data_folder, save_folder)

    mixtures = []
    if official:  # located first: a missing released set fails before the long work
        mixtures = corpora.find_official_test(corpus, data_folder, sample_rate, noise_folder, wham_folder, noisy)
        mixtures = _subset(mixtures, sizes["test"], seed)
        logger.info("official test set: %d mixtures from %s", len(mixtures), mixtures[0].mix.parent)
    sources = _Sources(sample_rate, strict_rate=corpus != "folder", max_source_seconds=cap)
    try:
        _prepare_tables(corpus, data_folder, save_folder, sources, paths, sizes, seed, noisy, activities,
                        test_overlaps, audio_subtype, official, mixtures, sample_rate, noise_folder)
    except (ValueError, RuntimeError) as err:
        if not sources.skipped:
            raise
        _write_report(save_folder, sources.skipped)  # the skipped files may be why it failed
        if type(err) not in (ValueError, RuntimeError):
            raise
        raise type(err)(f"{err} ({len(sources.skipped)} source files were skipped, listed with their "
                        f"problems in {save_folder / REPORT_FILE})") from err
    _write_report(save_folder, sources.skipped)
    _write_json_atomically(marker, options)
    logger.info("wrote %s", ", ".join(outputs))
    return paths


def _prepare_tables(corpus, data_folder, save_folder, sources, paths, sizes, seed, noisy, activities,
                    test_overlaps, audio_subtype, official, mixtures, sample_rate, noise_folder):
    """Every CSV of :func:`prepare_dsn_data`, written together (temporary files + renames)."""
    if corpus == "folder":
        pairs = _folder_pairs(data_folder, seed, sources, sizes)
    else:
        if corpus == "wsj0-2mix":
            pairs = corpora.find_wsj0_2mix(data_folder, sample_rate)
        elif corpus == "wham":
            pairs = corpora.find_wham(data_folder, sample_rate, noise_folder, seed)
        else:
            pairs = corpora.find_libri2mix(data_folder, sample_rate, noisy)
        pairs = {k: _subset(v, sizes[k], seed) for k, v in pairs.items()}

    fields = PAIR_FIELDS + (["noise_wav"] if noisy else [])
    tables = {}
    for k, split in enumerate(("train", "valid")):
        rng = np.random.default_rng([seed, 20 + k])
        rows = [_pair_row(p, sources, float(rng.uniform(*SIR_RANGE_DB)) if corpus == "folder" else None)
                for p in pairs[split]]
        tables[paths[split]] = (fields, [r for r in rows if r is not None])
    test = _test_rows(pairs["test"], sources, save_folder, seed, test_overlaps, activities,
                      draw_sir=corpus == "folder", subtype=audio_subtype)
    test_fields = TEST_FIELDS + (NOISE_TEST_FIELDS if noisy else [])
    for name, rows in test.items():
        tables[paths[f"test_{name}"]] = (test_fields, rows)
    if official:
        tables[paths[f"test_{OFFICIAL}"]] = (test_fields, _official_rows(mixtures, sample_rate, noisy))
    for path, (_, rows) in tables.items():
        if not rows:
            raise RuntimeError(f"no usable examples for {path.name}; see the warnings above")
    _write_all_atomically(tables)


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
