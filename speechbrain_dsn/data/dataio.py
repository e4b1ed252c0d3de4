"""SpeechBrain data pipelines with on-the-fly overlap/noise mixing (paper Sections IV-A, IV-C).

Training mixtures are built each time an item is fetched: "for each mixture,
the overlap ratio was uniformly sampled from [0.25, 1.0]" and, with noise,
"the noise activity level was sampled from [0.0, 1.0]" (Section IV-C), then
cropped to ``training_signal_len`` samples (4 s in the paper). Optionally the
speaker pair and gains are redrawn on every fetch (dynamic mixing) and each
source is speed-perturbed, as SpeechBrain's separation recipes do.

A crop keeps both speakers and the sampled overlap: when the two utterances
mixed at that overlap would span more than the crop, each is first cut to a
random window of its speech (:func:`~speechbrain_dsn.data.mixing.crop_speech_lengths`),
and the windows are mixed at the sampled overlap. Items also carry the
per-sample webrtcvad labels of both placed sources (``s1_vad``, ``s2_vad``),
cut and placed like the audio, for the eq. 20 weighting.

* train: random overlap / noise activity / crop, drawn from a numpy
  generator seeded by (``seed``, epoch, item ID) (see :class:`MixtureDataset`):
  new mixtures every epoch, independent of workers and DDP processes.
* valid: the same mixing with a generator seeded from ``seed`` and the item ID,
  so every epoch sees identical mixtures, cropped around all of their speech.
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
from speechbrain_dsn.data.mixing import crop_speech_lengths, mix_sources
from speechbrain_dsn.data.prepare import load_options
from speechbrain_dsn.data.vad import ActivityCache

SPEED_FACTORS = (0.95, 1.0, 1.05)
PAIR_KEYS = ["s1_wav", "s2_wav", "s1_spk", "s2_spk", "s1_start", "s1_end", "s2_start", "s2_end",
             "s1_gain", "s2_gain"]
INT_KEYS = ("s1_start", "s1_end", "s2_start", "s2_end")
VAD_CACHE = "vad_labels"  # per-source webrtcvad labels, under the data save folder
# columns a CSV must have (written by prepare_data.py; see speechbrain_dsn.data.prepare)
PAIR_COLUMNS = ["ID", "duration"] + PAIR_KEYS
TEST_COLUMNS = ["ID", "duration", "mix_wav", "s1_wav", "s2_wav", "overlap", *INT_KEYS]
PAIR_NUMBERS = {"duration": float, "s1_gain": float, "s2_gain": float, **{k: int for k in INT_KEYS}}


def _read_csv(path: pathlib.Path, required: Sequence[str] = (), numbers: Dict[str, type] = None) -> List[dict]:
    """Rows of a CSV; a missing column or a value that is not a number is an error naming them."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run prepare_data.py (prepare_dsn_data) first")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        fields = reader.fieldnames or []
    missing = [column for column in required if column not in fields]
    if missing:
        raise ValueError(f"{path} lacks the columns {', '.join(missing)} (it has {', '.join(fields) or 'none'}); "
                         f"expected {', '.join(required)}, as written by prepare_data.py")
    for index, row in enumerate(rows):
        for column, kind in (numbers or {}).items():
            if row.get(column) in (None, "") and column not in required:
                continue
            try:
                row[column] = kind(row[column])
            except (TypeError, ValueError):
                raise ValueError(f"{path}, row {index + 1} (ID {row.get('ID')!r}): column {column} is "
                                 f"{row[column]!r}, not {'an integer' if kind is int else 'a number'}") from None
    return rows


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
                 max_source_seconds: Optional[float] = None, activity: Optional[ActivityCache] = None):
        self.sample_rate = sample_rate
        self.overlap_range = tuple(overlap_range)
        self.noise_activity_range = tuple(noise_activity_range)
        self.segment_len = segment_len
        self.speed_perturb = speed_perturb
        self.cap = max_source_seconds
        self.activity = activity
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
        """Speech region of a source (optionally speed-perturbed), its bounds and VAD labels."""
        x = load_audio(path, self.sample_rate)
        labels = self.activity(path, x) if self.activity is not None else None
        lo, hi, (start, end) = speech_region(len(x), bounds, self.sample_rate, self.cap)
        x = x[lo:hi]
        labels = labels[lo:hi] if labels is not None else None
        if self.speed_perturb:
            factor = float(rng.choice(SPEED_FACTORS))
            if factor != 1.0:
                new_rate = int(round(self.sample_rate * factor))
                x = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(x)),
                                                   self.sample_rate, new_rate).numpy()
                start, end = int(start * factor), min(int(end * factor), len(x))
                if labels is not None:  # nearest neighbour onto the new time axis
                    index = np.minimum((np.arange(len(x)) / factor).astype(np.int64), len(labels) - 1)
                    labels = labels[index]
        return x, (start, end), labels

    @staticmethod
    def _window(source, length: int, rng: np.random.Generator):
        """A random window of ``length`` speech samples of a ``_source`` result.

        The window's bounds are its first and last labelled speech samples
        (its edges without labels), so that the overlap is planned on speech.
        """
        x, (start, end), labels = source
        if length >= end - start:
            return x[start:end], (0, end - start), None if labels is None else labels[start:end]
        lo = int(rng.integers(start, end - length + 1))
        x = x[lo:lo + length]
        bounds = (0, length)
        if labels is not None:
            labels = labels[lo:lo + length]
            speech = np.flatnonzero(labels)
            if len(speech) and speech[-1] + 1 - speech[0] >= length // 2:
                bounds = (int(speech[0]), int(speech[-1]) + 1)
        return x, bounds, labels

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
        first, second = self._source(p1, b1, rng), self._source(p2, b2, rng)
        overlap = float(rng.uniform(*self.overlap_range))
        seg, cut = self.segment_len, False
        if seg:
            # keep both speakers and the sampled overlap inside the crop
            speech = (first[1][1] - first[1][0], second[1][1] - second[1][0])
            lengths = crop_speech_lengths(*speech, overlap, seg)
            if lengths != speech:
                first, second = self._window(first, lengths[0], rng), self._window(second, lengths[1], rng)
                cut = True
        (x1, b1, l1), (x2, b2, l2) = first, second
        noise, activity = None, 1.0
        noise_path = row.get("noise_wav")
        if noise_path:
            if self.noises:
                noise_path = self.noises[int(rng.integers(len(self.noises)))]
            noise = load_audio(noise_path, self.sample_rate, first_channel=True)
            activity = float(rng.uniform(*self.noise_activity_range))
        labels = (l1, l2) if self.activity is not None else None
        m = mix_sources(x1, x2, self.sample_rate, overlap, b1, b2, gains=gains, noise=noise,
                        noise_activity=activity, rng=rng, labels=labels)
        signals = {"mix_sig": m.mix, "s1_sig": m.s1, "s2_sig": m.s2}
        if m.noise is not None:
            signals["noise_sig"] = m.noise
        if labels is not None:
            signals.update(s1_vad=m.s1_active.astype(np.float32), s2_vad=m.s2_active.astype(np.float32))
        length = len(m.mix)
        if cut and length < seg:
            # windows cut to fit the crop: pad their mixture with silence to the crop length
            before = int(rng.integers(0, seg - length + 1)) if random_crop else (seg - length) // 2
            signals = {k: np.pad(v, (before, seg - length - before)) for k, v in signals.items()}
            length = seg
        start = 0
        if seg and length > seg:
            union = (min(m.s1_bounds[0], m.s2_bounds[0]), max(m.s1_bounds[1], m.s2_bounds[1]))
            if union[1] - union[0] <= seg:  # the crop holds all the speech of both
                lo, hi = max(union[1] - seg, 0), min(union[0], length - seg)
                start = int(rng.integers(lo, hi + 1)) if random_crop else (lo + hi) // 2
            else:  # centre of the region where both speakers talk
                centre = (max(m.s1_bounds[0], m.s2_bounds[0]) + min(m.s1_bounds[1], m.s2_bounds[1])) // 2
                start = int(np.clip(centre - seg // 2, 0, length - seg))
        crop = slice(start, start + seg if seg else length)
        out = {k: torch.from_numpy(np.ascontiguousarray(v[crop])) for k, v in signals.items()}
        out["source_files"] = (p1, p2)
        return out


class MixtureDataset(DynamicItemDataset):
    """On-the-fly mixtures whose randomness is keyed by (seed, epoch, item ID).

    Each item is mixed with a generator seeded from ``seed``, the epoch (set
    by :meth:`set_epoch`; ``DSNBrain`` calls it at the start of every
    training epoch) and the item ID. A mixture therefore depends neither on
    the order of fetches, nor on DataLoader workers, nor on the number of DDP
    processes, and a run resumed in the middle of an epoch sees the same
    mixtures again. With ``epoch=None`` (validation) every epoch sees the
    same mixtures.
    """

    def __init__(self, data, seed: int, epoch: Optional[int] = 0):
        super().__init__(data)
        self.seed = int(seed)
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        """Draw the mixtures of ``epoch`` from now on (training datasets only)."""
        if self.epoch is not None:
            self.epoch = int(epoch)

    def rng(self, item_id: str) -> np.random.Generator:
        """The generator of one item in the current epoch."""
        key = [self.seed, zlib.crc32(item_id.encode())]
        return np.random.default_rng(key if self.epoch is None else key + [self.epoch])


def _pair_dataset(path: pathlib.Path, mixer: OnTheFlyMixer, seed: int, train: bool) -> MixtureDataset:
    """Dataset of on-the-fly mixtures: new draws each epoch for training, fixed ones for validation."""
    rows = _read_csv(path, PAIR_COLUMNS, PAIR_NUMBERS)
    data = {row["ID"]: dict(row) for row in rows}
    dataset = MixtureDataset(data, seed, epoch=0 if train else None)
    noisy = bool(rows) and "noise_wav" in rows[0]
    keys = ["id"] + PAIR_KEYS + (["noise_wav"] if noisy else [])
    outputs = ["mix_sig", "s1_sig", "s2_sig"] + (["noise_sig"] if noisy else [])
    outputs += (["s1_vad", "s2_vad"] if mixer.activity is not None else []) + ["source_files"]

    @sb.utils.data_pipeline.takes(*keys)
    @sb.utils.data_pipeline.provides(*outputs)
    def mix_pipeline(*values):
        row = dict(zip(keys, values))
        out = mixer.mix(row, dataset.rng(row["id"]), random_crop=train)
        for key in outputs:
            yield out[key]

    dataset.add_dynamic_item(mix_pipeline)
    dataset.set_output_keys(["id"] + outputs)
    return dataset


def _test_dataset(path: pathlib.Path, activity: Optional[ActivityCache] = None) -> DynamicItemDataset:
    rows = _read_csv(path, TEST_COLUMNS, {"duration": float, "overlap": float, **{k: int for k in INT_KEYS}})
    data = {row["ID"]: dict(row) for row in rows}
    dataset = DynamicItemDataset(data)
    names = ["mix", "s1", "s2"] + (["noise"] if rows and "noise_wav" in rows[0] else [])

    @sb.utils.data_pipeline.takes(*[f"{n}_wav" for n in names])
    @sb.utils.data_pipeline.provides(*[f"{n}_sig" for n in names])
    def read_pipeline(*paths):
        for wav in paths:
            yield torch.from_numpy(sf.read(wav, dtype="float32")[0])

    dataset.add_dynamic_item(read_pipeline)
    labels = []
    if activity is not None:
        # webrtcvad labels of each reference file, cached like those of the training sources
        labels = ["s1_vad", "s2_vad"]

        @sb.utils.data_pipeline.takes("s1_wav", "s2_wav")
        @sb.utils.data_pipeline.provides(*labels)
        def label_pipeline(*paths):
            for wav in paths:
                yield torch.from_numpy(activity(wav).astype(np.float32))

        dataset.add_dynamic_item(label_pipeline)
    dataset.set_output_keys(["id"] + [f"{n}_sig" for n in names] + labels + ["overlap", *INT_KEYS])
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
        Condition name (``ov100``, ``ov100_na50``..., ``official`` for the
        released test set) to its dataset, whose items add ``overlap,
        s1_start, s1_end, s2_start, s2_end``.

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
        activity=ActivityCache(hparams["sample_rate"], save_folder / VAD_CACHE),
    )
    train_csv = save_folder / "train.csv"
    pool = _read_csv(train_csv, PAIR_COLUMNS, PAIR_NUMBERS) if hparams.get("dynamic_mixing", False) else None
    train_mixer = OnTheFlyMixer(pool=pool, speed_perturb=hparams.get("speed_perturb", False), **common)
    seed = hparams.get("seed", 1234)
    train_data = _pair_dataset(train_csv, train_mixer, seed, train=True)
    valid_data = _pair_dataset(save_folder / "valid.csv", OnTheFlyMixer(**common), seed, train=False)

    wanted = hparams.get("test_conditions")
    test_datasets = {}
    for path in sorted(save_folder.glob("test_*.csv")):
        name = path.stem[len("test_"):]
        if wanted is None or name in wanted:
            test_datasets[name] = _test_dataset(path, common["activity"])
    missing = set(wanted or []) - set(test_datasets)
    if missing:
        raise FileNotFoundError(f"test conditions {sorted(missing)} not found in {save_folder}")
    return train_data, valid_data, test_datasets
