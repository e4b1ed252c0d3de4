"""SpeechBrain data pipelines with on-the-fly overlap/noise mixing (paper Sections IV-A, IV-C).

Training mixtures are built each time an item is fetched: "for each mixture,
the overlap ratio was uniformly sampled from [0.25, 1.0]" and, with noise,
"the noise activity level was sampled from [0.0, 1.0]" (Section IV-C), then
cropped to ``training_signal_len`` samples (4 s in the paper) by
:class:`~speechbrain_dsn.data.onthefly.OnTheFlyMixer`. Optionally the
speakers and gains are redrawn on every fetch (dynamic mixing) and each
source is speed-perturbed, as SpeechBrain's separation recipes do.

Every mixture has ``num_spks`` sources (hparams key, default 2): items carry
``mix_sig``, ``s1_sig`` ... ``s{num_spks}_sig`` and their webrtcvad labels
``s1_vad`` ... (+ ``noise_sig`` with noise). A CSV prepared for another
number of sources is an error naming it.

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
import re
import zlib
from typing import Dict, List, Optional, Sequence

import numpy as np
import soundfile as sf
import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_dsn.data.columns import bound_keys, count_sources, source_fields, test_fields
from speechbrain_dsn.data.onthefly import SPEED_FACTORS, OnTheFlyMixer
from speechbrain_dsn.data.prepare import load_options
from speechbrain_dsn.data.vad import ActivityCache

__all__ = ["MixtureDataset", "OnTheFlyMixer", "SPEED_FACTORS", "dataio_prep"]

VAD_CACHE = "vad_labels"  # per-source webrtcvad labels, under the data save folder
_SOURCE_COLUMN = re.compile(r"s(\d+)_")


def _pair_numbers(num_spks: int) -> Dict[str, type]:
    """Columns of a training CSV that hold numbers."""
    gains = {f"s{i}_gain": float for i in range(1, num_spks + 1)}
    return {"duration": float, **gains, **{k: int for k in bound_keys(num_spks)}}


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


def _check_num_spks(path: pathlib.Path, rows_columns: Sequence[str], num_spks: int):
    """A CSV prepared for another number of sources is an error naming it.

    (A CSV that lacks some columns of its own sources, e.g. ``s2_wav`` beside
    ``s2_start``, is left to the missing-columns error of ``_read_csv``.)
    """
    found = count_sources(rows_columns)
    numbered = {int(match.group(1)) for match in map(_SOURCE_COLUMN.match, rows_columns) if match}
    if found and found != num_spks and max(numbered) == found:
        raise ValueError(f"{path} holds mixtures of {found} sources (s1_wav ... s{found}_wav), but num_spks is "
                         f"{num_spks}; prepare the data again with num_spks: {num_spks} (another "
                         f"data_save_folder), or set num_spks: {found}")


def _read_prepared(path: pathlib.Path, required: List[str], numbers: Dict[str, type], num_spks: int) -> List[dict]:
    """Rows of a prepared CSV, checked for the columns of ``num_spks`` sources."""
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            _check_num_spks(path, csv.DictReader(handle).fieldnames or [], num_spks)
    return _read_csv(path, required, numbers)


def _pair_dataset(path: pathlib.Path, mixer: OnTheFlyMixer, seed: int, train: bool) -> MixtureDataset:
    """Dataset of on-the-fly mixtures: new draws each epoch for training, fixed ones for validation."""
    num_spks = mixer.num_spks
    rows = _read_prepared(path, source_fields(num_spks), _pair_numbers(num_spks), num_spks)
    data = {row["ID"]: dict(row) for row in rows}
    dataset = MixtureDataset(data, seed, epoch=0 if train else None)
    noisy = bool(rows) and "noise_wav" in rows[0]
    keys = ["id"] + source_fields(num_spks)[2:] + (["noise_wav"] if noisy else [])
    sources = [f"s{i}" for i in range(1, num_spks + 1)]
    outputs = ["mix_sig"] + [f"{s}_sig" for s in sources] + (["noise_sig"] if noisy else [])
    outputs += ([f"{s}_vad" for s in sources] if mixer.activity is not None else []) + ["source_files"]

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


def _test_dataset(path: pathlib.Path, num_spks: int, activity: Optional[ActivityCache] = None) -> DynamicItemDataset:
    required = [c for c in test_fields(num_spks) if c in ("ID", "duration", "mix_wav", "overlap")
                or c.endswith(("_wav", "_start", "_end"))]
    int_keys = bound_keys(num_spks)
    rows = _read_prepared(path, required, {"duration": float, "overlap": float, **{k: int for k in int_keys}},
                          num_spks)
    data = {row["ID"]: dict(row) for row in rows}
    dataset = DynamicItemDataset(data)
    sources = [f"s{i}" for i in range(1, num_spks + 1)]
    names = ["mix"] + sources + (["noise"] if rows and "noise_wav" in rows[0] else [])

    @sb.utils.data_pipeline.takes(*[f"{n}_wav" for n in names])
    @sb.utils.data_pipeline.provides(*[f"{n}_sig" for n in names])
    def read_pipeline(*paths):
        for wav in paths:
            yield torch.from_numpy(sf.read(wav, dtype="float32")[0])

    dataset.add_dynamic_item(read_pipeline)
    labels = []
    if activity is not None:
        # webrtcvad labels of each reference file, cached like those of the training sources
        labels = [f"{s}_vad" for s in sources]

        @sb.utils.data_pipeline.takes(*[f"{s}_wav" for s in sources])
        @sb.utils.data_pipeline.provides(*labels)
        def label_pipeline(*paths):
            for wav in paths:
                yield torch.from_numpy(activity(wav).astype(np.float32))

        dataset.add_dynamic_item(label_pipeline)
    dataset.set_output_keys(["id"] + [f"{n}_sig" for n in names] + labels + ["overlap", *int_keys])
    return dataset


#: Keys ``dataio_prep`` reads (besides ``save_folder``); all required.
DATAIO_KEYS = ("save_folder", "sample_rate", "num_spks", "training_signal_len", "overlap_range",
               "noise_activity_range", "dynamic_mixing", "speed_perturb", "seed", "test_conditions")
#: The recipe's values of the data keys (hparams/dsn_3level.yaml), for tests and notebooks.
DATAIO_DEFAULTS = dict(num_spks=2, training_signal_len=32000, overlap_range=[0.25, 1.0],
                       noise_activity_range=[0.0, 1.0], dynamic_mixing=False, speed_perturb=False, seed=1234,
                       test_conditions=None)


def dataio_prep(hparams: dict):
    """Create the train, valid and test datasets from the prepared CSVs.

    Arguments
    ---------
    hparams : dict
        Every key of :data:`DATAIO_KEYS` (a missing one is a ``KeyError``):
        ``save_folder``, ``sample_rate``, ``training_signal_len`` (crop in
        samples, None = no crop), ``overlap_range``, ``noise_activity_range``,
        ``dynamic_mixing``, ``speed_perturb``, ``test_conditions`` (names such
        as ``ov75``; None: all found), ``seed`` (validation mixtures) and
        ``num_spks`` (sources per mixture; must match the prepared CSVs).

    Returns
    -------
    train_data, valid_data : DynamicItemDataset
        Items with ``id, mix_sig, s1_sig ... s{num_spks}_sig``, their
        labels ``s1_vad ...`` (+ ``noise_sig``) and ``source_files``.
    test_datasets : dict of str to DynamicItemDataset
        Condition name (``ov100``, ``ov100_na50``..., ``na50`` for one
        source, ``official`` for the released test set) to its dataset, whose
        items add ``overlap, s1_start, s1_end, ...``.

    Example
    -------
    >>> import tempfile
    >>> hparams = dict(DATAIO_DEFAULTS, save_folder=tempfile.mkdtemp(), sample_rate=8000)
    >>> dataio_prep(hparams)
    Traceback (most recent call last):
     ...
    FileNotFoundError: .../train.csv not found; run prepare_data.py (prepare_dsn_data) first
    """
    missing = [k for k in DATAIO_KEYS if k not in hparams]
    if missing:
        raise KeyError(f"dataio_prep needs the hyperparameters {missing} (see hparams/dsn_3level.yaml)")
    save_folder = pathlib.Path(hparams["save_folder"])
    options = load_options(save_folder)
    common = dict(
        sample_rate=hparams["sample_rate"],
        overlap_range=hparams["overlap_range"],
        noise_activity_range=hparams["noise_activity_range"],
        segment_len=hparams["training_signal_len"],
        max_source_seconds=options.get("max_source_seconds"),
        activity=ActivityCache(hparams["sample_rate"], save_folder / VAD_CACHE),
        num_spks=int(hparams["num_spks"]),
    )
    train_csv = save_folder / "train.csv"
    num_spks = common["num_spks"]
    pool = None
    if hparams["dynamic_mixing"]:
        pool = _read_prepared(train_csv, source_fields(num_spks), _pair_numbers(num_spks), num_spks)
    train_mixer = OnTheFlyMixer(pool=pool, speed_perturb=hparams["speed_perturb"], **common)
    seed = hparams["seed"]
    train_data = _pair_dataset(train_csv, train_mixer, seed, train=True)
    valid_data = _pair_dataset(save_folder / "valid.csv", OnTheFlyMixer(**common), seed, train=False)

    wanted = hparams["test_conditions"]
    test_datasets = {}
    for path in sorted(save_folder.glob("test_*.csv")):
        name = path.stem[len("test_"):]
        if wanted is None or name in wanted:
            test_datasets[name] = _test_dataset(path, num_spks, common["activity"])
    missing = set(wanted or []) - set(test_datasets)
    if missing:
        raise FileNotFoundError(f"test conditions {sorted(missing)} not found in {save_folder}")
    return train_data, valid_data, test_datasets
