"""Rows of the prepared CSVs: source checks, training rows, materialised test mixtures.

The building blocks of the validate and write stages of
:func:`~speechbrain_dsn.data.prepare.prepare_dsn_data` (paper Section IV-A):

* :class:`SourceReader` reads every source file once, measures its VAD speech
  boundaries and records each unusable file with its problem;
* :func:`set_row` is the CSV row of a training/validation set of sources;
* :func:`test_rows` materialises the fixed test mixtures of every condition
  (overlap x noise activity) as float WAVs;
* :func:`official_rows` measures the released test mixtures as they are;
* :func:`write_all_atomically` writes CSVs to temporary files, then renames them.

Mixtures have ``num_spks`` sources; columns as in :mod:`speechbrain_dsn.data.columns`.
"""

import csv
import logging
import os
import pathlib
from typing import Dict, List, Optional, Sequence

import numpy as np

from speechbrain_dsn.data.audio import BadAudioError, load_audio, speech_region, write_audio
from speechbrain_dsn.data.corpora import OfficialMixture, SourceSet
from speechbrain_dsn.data.mixing import (SIR_RANGE_DB, SNR_RANGE_DB, SPEECH_LEVEL, active_rms, chain_overlap,
                                         mix_utterances, relative_levels_db, speech_sir_db)
from speechbrain_dsn.data.vad import speech_boundaries

logger = logging.getLogger(__name__)


def condition_name(overlap: Optional[float], noise_activity: Optional[float] = None) -> str:
    """Name of a test condition, e.g. ``ov75``, ``ov100_na50``, or ``na50`` for one source.

    Example
    -------
    >>> condition_name(0.75), condition_name(1.0, 0.5), condition_name(None, 0.5)
    ('ov75', 'ov100_na50', 'na50')
    """
    parts = [] if overlap is None else [f"ov{int(round(100 * overlap))}"]
    if noise_activity is not None:
        parts.append(f"na{int(round(100 * noise_activity))}")
    return "_".join(parts)


class SourceReader:
    """Loads sources once, caching their capped VAD boundaries; bad files are skipped and recorded.

    Arguments
    ---------
    sample_rate : int
        Working sample rate.
    strict_rate : bool
        Files must have ``sample_rate`` (else they are resampled).
    max_source_seconds : float, optional
        Cap on each source's speech duration.
    """

    def __init__(self, sample_rate: int, strict_rate: bool, max_source_seconds: Optional[float]):
        self.sample_rate, self.strict_rate, self.cap = sample_rate, strict_rate, max_source_seconds
        self.bounds: Dict[pathlib.Path, tuple] = {}
        self.skipped: Dict[pathlib.Path, str] = {}  # file -> problem

    def _skip(self, path: pathlib.Path, problem: str, kind: str = "source"):
        self.skipped[path] = problem
        logger.warning("skipping %s %s: %s", kind, path, problem)

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

    def usable(self, item: SourceSet) -> bool:
        """Whether every source file of ``item`` can be used."""
        return all(self.load(path) is not None for path in item.files)

    def usable_noise(self, path: pathlib.Path) -> bool:
        """Whether a noise file can be read (multi-channel: its first channel; any rate: resampled)."""
        if path in self.skipped:
            return False
        try:
            load_audio(path, self.sample_rate, first_channel=True)
        except (BadAudioError, FileNotFoundError) as err:
            self._skip(path, str(err), kind="noise")
            return False
        return True


def set_row(item: SourceSet, reader: SourceReader, sir_db: Optional[Sequence[float]]) -> dict:
    """CSV row of a training/validation set of sources; ``sir_db=None`` keeps raw gains of 1."""
    loaded = [reader.load(path) for path in item.files]
    gains = [1.0] * len(loaded)
    if sir_db is not None:
        levels = relative_levels_db(len(loaded), sir_db, None)
        gains = [SPEECH_LEVEL / max(active_rms(x, b), 1e-8) * 10 ** (level / 20)
                 for (x, b), level in zip(loaded, levels)]
    sr = reader.sample_rate
    regions = [speech_region(len(x), b, sr, reader.cap) for x, b in loaded]
    row = {"ID": item.id, "duration": round(max(hi - lo for lo, hi, _ in regions) / sr, 3)}
    row.update({f"s{i}_wav": str(path) for i, path in enumerate(item.files, 1)})
    row.update({f"s{i}_spk": spk for i, spk in enumerate(item.speakers, 1)})
    for i, (_, (start, end)) in enumerate(loaded, 1):
        row.update({f"s{i}_start": start, f"s{i}_end": end})
    row.update({f"s{i}_gain": f"{g:.6g}" for i, g in enumerate(gains, 1)})
    if item.noise is not None:
        row["noise_wav"] = str(item.noise)
    return row


def test_rows(sets: List[SourceSet], reader: SourceReader, save_folder: pathlib.Path, seed: int,
              overlaps: Sequence[Optional[float]], activities: Optional[Sequence[float]], draw_sir: bool,
              subtype: str) -> Dict[str, List[dict]]:
    """Materialise every test condition; the same set keeps its SIRs/SNR across conditions.

    ``overlaps`` is ``[None]`` for one source (speech enhancement: the
    conditions are the noise activities).
    """
    sr = reader.sample_rate
    conditions = [(ov, na) for ov in overlaps for na in (activities if activities is not None else [None])]
    rows = {condition_name(ov, na): [] for ov, na in conditions}
    for i, item in enumerate(sets):
        cropped, bounds = [], []
        for path in item.files:
            x, b = reader.load(path)
            lo, hi, rel = speech_region(len(x), b, sr, reader.cap)
            cropped.append(x[lo:hi])
            bounds.append(rel)
        num = len(cropped)
        item_rng = np.random.default_rng([seed, 1, i])
        sirs = item_rng.uniform(*SIR_RANGE_DB, size=num - 1) if draw_sir and num > 1 else None
        snr = float(item_rng.uniform(*SNR_RANGE_DB))
        noise = load_audio(item.noise, sr, first_channel=True) if activities is not None else None
        for k, (ov, na) in enumerate(conditions):
            name = condition_name(ov, na)
            m = mix_utterances(cropped, sr, 1.0 if ov is None else ov, bounds, sir_db=sirs,
                               gains=None if draw_sir else [1.0] * num, noise=noise,
                               noise_activity=na if na is not None else 1.0, snr_db=snr,
                               rng=np.random.default_rng([seed, 2, i, k]), measure_overlap=True)
            folder = save_folder / "test" / name
            signals = {"mix": m.mix, **{f"s{j}": x for j, x in enumerate(m.sources, 1)}}
            if noise is not None:
                signals["noise"] = m.noise
            paths = {key: folder / f"{item.id}_{key}.wav" for key in signals}
            for key, path in paths.items():
                write_audio(path, signals[key], sr, subtype)
            row = {"ID": item.id, "duration": round(len(m.mix) / sr, 3), "mix_wav": str(paths["mix"])}
            row.update({f"s{j}_wav": str(paths[f"s{j}"]) for j in range(1, num + 1)})
            row.update(overlap=round(m.overlap, 4), target_overlap="" if ov is None else ov)
            for j, (start, end) in enumerate(m.bounds, 1):
                row.update({f"s{j}_start": start, f"s{j}_end": end})
            row["sir_db"] = "" if m.sir_db is None else round(m.sir_db, 3)
            row.update({f"s{j}_spk": spk for j, spk in enumerate(item.speakers, 1)})
            if noise is not None:
                row.update(noise_wav=str(paths["noise"]), noise_activity=round(m.noise_activity, 4),
                           snr_db=round(m.snr_db, 3) if m.snr_db is not None else "")
            rows[name].append(row)
    return rows


def official_rows(mixtures: List[OfficialMixture], sample_rate: int, noisy: bool) -> List[dict]:
    """Rows of the released test mixtures, measured on the files as they are.

    Every file must have ``sample_rate`` and the files of one mixture the same
    length; any problem is an error (a partial official set would not compare).
    """
    rows = []
    for m in mixtures:
        files = {"mix": m.mix, **{f"s{i}": path for i, path in enumerate(m.files, 1)}}
        if noisy:
            files["noise"] = m.noise
        signals = {key: load_audio(path, sample_rate, resample=False) for key, path in files.items()}
        for key in files:
            if len(signals[key]) != len(signals["mix"]):
                raise ValueError(
                    f"official test mixture {m.mix} has {len(signals['mix'])} samples but its {key} "
                    f"reference {files[key]} has {len(signals[key])}; the released files must match")
        sources = [signals[f"s{i}"] for i in range(1, len(m.files) + 1)]
        bounds = [speech_boundaries(x, sample_rate) for x in sources]
        sir = speech_sir_db(sources, bounds)
        row = {"ID": m.id, "duration": round(len(signals["mix"]) / sample_rate, 3), "mix_wav": str(m.mix)}
        row.update({f"s{i}_wav": str(path) for i, path in enumerate(m.files, 1)})
        row.update(overlap=round(chain_overlap(bounds), 4), target_overlap="")
        for i, (start, end) in enumerate(bounds, 1):
            row.update({f"s{i}_start": start, f"s{i}_end": end})
        row["sir_db"] = "" if sir is None else round(sir, 3)
        row.update({f"s{i}_spk": spk for i, spk in enumerate(m.speakers, 1)})
        if noisy:
            noise = signals["noise"]
            # SNR: speech inside the union of the speech boundaries over the whole noise file
            union = (min(b[0] for b in bounds), max(b[1] for b in bounds))
            snr = 20 * np.log10(max(active_rms(np.sum(sources, axis=0), union), 1e-12)
                                / max(active_rms(noise, (0, len(noise))), 1e-12))
            row.update(noise_wav=str(m.noise), noise_activity=round(np.count_nonzero(noise) / len(noise), 4),
                       snr_db=round(float(snr), 3))
        rows.append(row)
    return rows


def write_csv(path: pathlib.Path, fields: List[str], rows: List[dict]):
    """One CSV with the columns ``fields``."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_all_atomically(tables: Dict[pathlib.Path, tuple]):
    """Write every CSV (``path: (fields, rows)``) to a temporary file first, then rename them all."""
    temps = {path: path.with_name(path.name + ".tmp") for path in tables}
    try:
        for path, (fields, rows) in tables.items():
            write_csv(temps[path], fields, rows)
        for path, temp in temps.items():
            os.replace(temp, path)
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


test_rows.__test__ = False  # rows of the test sets, not a test (pytest collects test_* names)
