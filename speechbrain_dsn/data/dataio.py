"""SpeechBrain data pipelines with on-the-fly overlap/noise mixing (paper Sections IV-A, IV-C).

Training mixtures are built each time an item is fetched: "for each mixture,
the overlap ratio was uniformly sampled from [0.25, 1.0]" and, with noise,
"the noise activity level was sampled from [0.0, 1.0]" (Section IV-C), then
cropped to ``training_signal_len`` samples (4 s in the paper). Optionally the
speaker pair and gains are redrawn on every fetch (dynamic mixing) and each
source is speed-perturbed, as SpeechBrain's separation recipes do.

* train: random overlap / noise activity / crop per fetch, drawn from a numpy
  generator seeded by ``torch.randint`` (reproducible under ``torch.manual_seed``,
  including DataLoader workers, which torch seeds deterministically).
* valid: the same mixing with a generator seeded from ``seed`` and the item ID,
  so every epoch sees identical mixtures; cropped to ``training_signal_len``
  around the centre of the overlap region (keeps validation cheap).
* test: the fixed mixtures written by :mod:`speechbrain_dsn.data.prepare`,
  uncropped, with their realised ``overlap`` and speech boundaries.
"""

import csv
import pathlib
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch
import torchaudio
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_dsn.data.audio import load_audio, speech_region
from speechbrain_dsn.data.mixing import mix_sources
from speechbrain_dsn.data.prepare import load_options

SPEED_FACTORS = (0.95, 1.0, 1.05)
PAIR_KEYS = ["s1_wav", "s2_wav", "s1_spk", "s2_spk", "s1_start", "s1_end", "s2_start", "s2_end",
             "s1_gain", "s2_gain"]
INT_KEYS = ("s1_start", "s1_end", "s2_start", "s2_end")


def _read_csv(path: pathlib.Path) -> List[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run prepare_data.py (prepare_dsn_data) first")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


class OnTheFlyMixer:
    """Builds one training/validation mixture from a CSV row of source pairs.

    Arguments
    ---------
    sample_rate : int
        Working sample rate.
    overlap_range, noise_activity_range : tuple of float
        Uniform ranges of the overlap ratio and the noise activity.
    segment_len : int, optional
        Crop length in samples (no crop when None or longer than the mixture).
    pool : list of dict, optional
        Training rows to draw new speaker pairs from (dynamic mixing).
    speed_perturb : bool
        Resample each source by a factor drawn from ``SPEED_FACTORS``.
    max_source_seconds : float, optional
        Speech cap used at preparation (keeps sources consistent with the tests).

    Example
    -------
    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> for name in ("a.wav", "b.wav"):
    ...     sf.write(os.path.join(folder, name), 0.1 * rng.standard_normal(8000), 8000)
    >>> row = {"s1_wav": os.path.join(folder, "a.wav"), "s2_wav": os.path.join(folder, "b.wav"),
    ...        "s1_start": 0, "s1_end": 8000, "s2_start": 0, "s2_end": 8000,
    ...        "s1_gain": 1.0, "s2_gain": 1.0}
    >>> out = OnTheFlyMixer(8000, (0.5, 0.5), segment_len=4000).mix(row, rng)
    >>> out["mix_sig"].shape, bool(torch.equal(out["mix_sig"], out["s1_sig"] + out["s2_sig"]))
    (torch.Size([4000]), True)
    """

    def __init__(self, sample_rate: int, overlap_range: Sequence[float] = (0.25, 1.0),
                 noise_activity_range: Sequence[float] = (0.0, 1.0), segment_len: Optional[int] = None,
                 pool: Optional[List[dict]] = None, speed_perturb: bool = False,
                 max_source_seconds: Optional[float] = None):
        self.sample_rate = sample_rate
        self.overlap_range = tuple(overlap_range)
        self.noise_activity_range = tuple(noise_activity_range)
        self.segment_len = segment_len
        self.speed_perturb = speed_perturb
        self.cap = max_source_seconds
        # dynamic-mixing pool: every distinct source utterance of the training rows
        self.utterances, self.noises = [], []
        if pool:
            seen = {}
            for row in pool:
                for k in ("s1", "s2"):
                    seen[row[f"{k}_wav"]] = (row[f"{k}_wav"], row[f"{k}_spk"],
                                             (int(row[f"{k}_start"]), int(row[f"{k}_end"])))
            # grouped by speaker: [lo, hi) of each speaker's utterances
            self.utterances = sorted(seen.values(), key=lambda u: (u[1], u[0]))
            self._speaker_span = {}
            for i, (_, spk, _) in enumerate(self.utterances):
                lo, _ = self._speaker_span.get(spk, (i, i))
                self._speaker_span[spk] = (lo, i + 1)
            self.noises = sorted({row["noise_wav"] for row in pool if row.get("noise_wav")})
            if len(self._speaker_span) < 2:
                raise ValueError("dynamic mixing needs training utterances of at least 2 speakers")

    def _source(self, path: str, bounds: Tuple[int, int], rng: np.random.Generator):
        """Speech region of a source, optionally speed-perturbed, with its bounds."""
        x = load_audio(path, self.sample_rate)
        lo, hi, (start, end) = speech_region(len(x), bounds, self.sample_rate, self.cap)
        x = x[lo:hi]
        if self.speed_perturb:
            factor = float(rng.choice(SPEED_FACTORS))
            if factor != 1.0:
                new_rate = int(round(self.sample_rate * factor))
                x = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(x)),
                                                   self.sample_rate, new_rate).numpy()
                start, end = int(start * factor), min(int(end * factor), len(x))
        return x, (start, end)

    def _draw_pair(self, rng: np.random.Generator):
        """Two utterances of different speakers from the pool."""
        first = self.utterances[int(rng.integers(len(self.utterances)))]
        # uniform over the utterances of the other speakers: skip the first's span
        lo, hi = self._speaker_span[first[1]]
        index = int(rng.integers(len(self.utterances) - (hi - lo)))
        second = self.utterances[index + (hi - lo) if index >= lo else index]
        return first, second

    def mix(self, row: dict, rng: np.random.Generator, random_crop: bool = True) -> Dict[str, object]:
        """Mix the pair of ``row`` (or a random pool pair) and crop it.

        Returns a dict with ``mix_sig, s1_sig, s2_sig`` (+ ``noise_sig``) as 1-D
        float tensors of equal length, and ``source_files`` (the two paths).
        """
        gains = None  # None: active-RMS normalisation + random SIR
        if self.utterances:
            (p1, _, b1), (p2, _, b2) = self._draw_pair(rng)
        else:
            p1, p2 = row["s1_wav"], row["s2_wav"]
            b1 = (int(row["s1_start"]), int(row["s1_end"]))
            b2 = (int(row["s2_start"]), int(row["s2_end"]))
            gains = (float(row["s1_gain"]), float(row["s2_gain"]))
        (x1, b1), (x2, b2) = self._source(p1, b1, rng), self._source(p2, b2, rng)
        noise, activity = None, 1.0
        noise_path = row.get("noise_wav")
        if noise_path:
            if self.noises:
                noise_path = self.noises[int(rng.integers(len(self.noises)))]
            noise = load_audio(noise_path, self.sample_rate, first_channel=True)
            activity = float(rng.uniform(*self.noise_activity_range))
        m = mix_sources(x1, x2, self.sample_rate, float(rng.uniform(*self.overlap_range)), b1, b2,
                        gains=gains, noise=noise, noise_activity=activity, rng=rng)
        length, seg = len(m.mix), self.segment_len
        start = 0
        if seg and length > seg:
            if random_crop:
                start = int(rng.integers(0, length - seg + 1))
            else:  # centre of the region where both speakers talk
                centre = (max(m.s1_bounds[0], m.s2_bounds[0]) + min(m.s1_bounds[1], m.s2_bounds[1])) // 2
                start = int(np.clip(centre - seg // 2, 0, length - seg))
        crop = slice(start, start + seg if seg else length)
        out = {"mix_sig": m.mix[crop], "s1_sig": m.s1[crop], "s2_sig": m.s2[crop]}
        if m.noise is not None:
            out["noise_sig"] = m.noise[crop]
        out = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}
        out["source_files"] = (p1, p2)
        return out


def _pair_dataset(path: pathlib.Path, mixer: OnTheFlyMixer, seed: Optional[int]) -> DynamicItemDataset:
    """Dataset of on-the-fly mixtures; ``seed=None`` draws fresh randomness per fetch."""
    rows = _read_csv(path)
    data = {row["ID"]: dict(row, duration=float(row["duration"])) for row in rows}
    dataset = DynamicItemDataset(data)
    noisy = bool(rows) and "noise_wav" in rows[0]
    keys = ["id"] + PAIR_KEYS + (["noise_wav"] if noisy else [])
    outputs = ["mix_sig", "s1_sig", "s2_sig"] + (["noise_sig"] if noisy else []) + ["source_files"]

    @sb.utils.data_pipeline.takes(*keys)
    @sb.utils.data_pipeline.provides(*outputs)
    def mix_pipeline(*values):
        row = dict(zip(keys, values))
        if seed is None:  # training: reproducible through torch's global/worker seed
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        else:  # validation: the same mixture every epoch
            rng = np.random.default_rng([seed, zlib.crc32(row["id"].encode())])
        out = mixer.mix(row, rng, random_crop=seed is None)
        for key in outputs:
            yield out[key]

    dataset.add_dynamic_item(mix_pipeline)
    dataset.set_output_keys(["id"] + outputs)
    return dataset


def _test_dataset(path: pathlib.Path) -> DynamicItemDataset:
    rows = _read_csv(path)
    data = {}
    for row in rows:
        item = dict(row, duration=float(row["duration"]), overlap=float(row["overlap"]))
        item.update({k: int(row[k]) for k in INT_KEYS})
        data[row["ID"]] = item
    dataset = DynamicItemDataset(data)
    names = ["mix", "s1", "s2"] + (["noise"] if rows and "noise_wav" in rows[0] else [])

    @sb.utils.data_pipeline.takes(*[f"{n}_wav" for n in names])
    @sb.utils.data_pipeline.provides(*[f"{n}_sig" for n in names])
    def read_pipeline(*paths):
        for wav in paths:
            yield torch.from_numpy(sf.read(wav, dtype="float32")[0])

    dataset.add_dynamic_item(read_pipeline)
    dataset.set_output_keys(["id"] + [f"{n}_sig" for n in names] + ["overlap", *INT_KEYS])
    return dataset


def dataio_prep(hparams: dict):
    """Create the train, valid and test datasets from the prepared CSVs.

    Arguments
    ---------
    hparams : dict
        Reads ``save_folder``, ``sample_rate``, ``training_signal_len``
        (crop in samples, None = no crop), ``overlap_range`` (default
        [0.25, 1.0]), ``noise_activity_range`` (default [0.0, 1.0]),
        ``dynamic_mixing`` (default False), ``speed_perturb`` (default False),
        ``test_conditions`` (names such as ``ov75``; default all found) and
        ``seed`` (validation mixtures, default 1234).

    Returns
    -------
    train_data, valid_data : DynamicItemDataset
        Items with ``id, mix_sig, s1_sig, s2_sig`` (+ ``noise_sig``) and
        ``source_files``.
    test_datasets : dict of str to DynamicItemDataset
        Condition name (``ov100``, ``ov100_na50``...) to its dataset, whose
        items add ``overlap, s1_start, s1_end, s2_start, s2_end``.

    Example
    -------
    >>> import tempfile
    >>> dataio_prep({"save_folder": tempfile.mkdtemp(), "sample_rate": 8000})
    Traceback (most recent call last):
     ...
    FileNotFoundError: .../train.csv not found; run prepare_data.py (prepare_dsn_data) first
    """
    save_folder = pathlib.Path(hparams["save_folder"])
    options = load_options(save_folder)
    common = dict(
        sample_rate=hparams["sample_rate"],
        overlap_range=hparams.get("overlap_range") or (0.25, 1.0),
        noise_activity_range=hparams.get("noise_activity_range") or (0.0, 1.0),
        segment_len=hparams.get("training_signal_len"),
        max_source_seconds=options.get("max_source_seconds"),
    )
    train_csv = save_folder / "train.csv"
    pool = _read_csv(train_csv) if hparams.get("dynamic_mixing", False) else None
    train_mixer = OnTheFlyMixer(pool=pool, speed_perturb=hparams.get("speed_perturb", False), **common)
    train_data = _pair_dataset(train_csv, train_mixer, seed=None)
    valid_data = _pair_dataset(save_folder / "valid.csv", OnTheFlyMixer(**common), seed=hparams.get("seed", 1234))

    wanted = hparams.get("test_conditions")
    test_datasets = {}
    for path in sorted(save_folder.glob("test_*.csv")):
        name = path.stem[len("test_"):]
        if wanted is None or name in wanted:
            test_datasets[name] = _test_dataset(path)
    missing = set(wanted or []) - set(test_datasets)
    if missing:
        raise FileNotFoundError(f"test conditions {sorted(missing)} not found in {save_folder}")
    return train_data, valid_data, test_datasets
