"""Locate the source utterances of each supported corpus (paper Section IV-A).

The paper uses WSJ0-2mix (min, 8 kHz) and WHAM!; LibriMix, the 3-speaker
WSJ0-3mix and Libri3Mix, and any ``<speaker>/<file>`` folder are supported as
well. This module only finds files and groups them into the source sets of
mixtures; reading, VAD and mixing happen in :mod:`speechbrain_dsn.data.prepare`,
and :mod:`speechbrain_dsn.data.registry` ties each corpus name to its finders.
Splits are always called ``train``, ``valid`` and ``test``.

Expected layouts (the root may be given at any level shown):

* ``wsj0-2mix``: ``<root>/2speakers/wav8k/min/{tr,cv,tt}/{s1,s2}/*.wav``
  (``wav16k`` for 16 kHz; ``max`` accepted when ``min`` is absent).
* ``wsj0-3mix``: ``<root>/3speakers/wav8k/min/{tr,cv,tt}/{s1,s2,s3}/*.wav``.
* ``wham``: ``wsj0-2mix`` plus ``wham_noise/{tr,cv,tt}/*.wav`` (``--noise_folder``
  or a ``wham_noise`` folder beside/inside the root).
* ``libri2mix``: ``<root>/Libri2Mix/wav8k/min/{train-360|train-100,dev,test}/{s1,s2,noise}``;
  ``libri3mix``: ``<root>/Libri3Mix/...`` with ``{s1,s2,s3,noise}``.
* ``folder``: ``<root>/<speaker>/**/<file>.{wav,flac,ogg}``; its noise (optional,
  required for one-speaker enhancement) any ``<noise_folder>/**/<file>``, or
  ``<noise_folder>/{train,valid,test}/**/<file>`` to fix the split.

The official test sets, as released (condition ``official``): WSJ0-2mix and
WSJ0-3mix ``tt/{mix,s1,s2[,s3]}``; WHAM! ``tt/{mix_both,s1,s2,noise}`` of the
tree written by the WHAM! scripts (``--wham_folder``, or a ``wham``,
``wham_wav``, ``wham_original`` or ``wham_mix`` folder beside/inside the root,
or the root itself); LibriMix ``test/{mix_clean,s1,s2[,s3]}`` (noisy:
``test/{mix_both,...,noise}``).
"""

import logging
import pathlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from speechbrain_dsn.data.audio import SUPPORTED_SUFFIXES

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
WSJ0_SPLITS = {"train": "tr", "valid": "cv", "test": "tt"}
IGNORED_SUFFIXES = {".txt", ".md", ".csv", ".json", ".yaml", ".py", ".lab", ".trans"}
WSJ0_LAYOUT = "<data_folder>/{N}speakers/wav{8k,16k}/{min,max}/{tr,cv,tt}/{sources}/*.wav"
WHAM_MIX_LAYOUT = "<wham_folder>/wav{8k,16k}/{min,max}/tt/{mix_both,s1,s2,noise}/*.wav"
WHAM_MIX_NAMES = ("wham", "wham_wav", "wham_original", "wham_mix")
OFFICIAL_HINT = "or set official_test: False (--official_test False) to skip the official test set"
LIBRI_LAYOUT = "<data_folder>/Libri{N}Mix/wav{8k,16k}/{min,max}/{train-360|train-100,dev,test}/{sources,noise}/*.wav"
NOISE_SPLIT_FRACTIONS = {"valid": 0.1, "test": 0.2}  # of a folder of noise files without split folders


@dataclass
class SourceSet:
    """The source files of one mixture (one per speaker), and its noise file, if any."""

    id: str
    files: List[pathlib.Path]
    speakers: List[str]
    noise: Optional[pathlib.Path] = None


@dataclass
class OfficialMixture:
    """One mixture of a released test set: its files, used as they are."""

    id: str
    mix: pathlib.Path
    files: List[pathlib.Path]
    speakers: List[str]
    noise: Optional[pathlib.Path] = None


def _layout(template: str, num_spks: int) -> str:
    """A layout string for ``num_spks`` sources, e.g. ``.../3speakers/.../{s1,s2,s3}/*.wav``."""
    return template.replace("{N}", str(num_spks)).replace("sources", ",".join(_source_names(num_spks)))


def _source_names(num_spks: int) -> List[str]:
    return [f"s{i}" for i in range(1, num_spks + 1)]


def _rate_folder(sample_rate: int) -> str:
    if sample_rate not in (8000, 16000):
        raise ValueError(f"this corpus exists at 8000 or 16000 Hz only, got sample_rate={sample_rate}")
    return f"wav{sample_rate // 1000}k"


def _find_root(candidates: Sequence[pathlib.Path], required: Sequence[str], layout: str, data_folder) -> pathlib.Path:
    for cand in candidates:
        if all((cand / sub).is_dir() for sub in required):
            return cand
    raise FileNotFoundError(f"no corpus found under {data_folder}; expected the layout {layout}")


def _speakers_from_id(mix_id: str, style: str, num_spks: int) -> List[str]:
    """Speaker ids encoded in a mixture name (fallback: unique per mixture)."""
    parts = mix_id.split("_")
    if style == "wsj0" and len(parts) == 2 * num_spks:  # 011a010d_0.54_20do010c_-0.54(_...)
        return [parts[2 * k][:3] for k in range(num_spks)]
    if style == "libri" and len(parts) == num_spks:  # 1089-134686-0000_121-121726-0000(_...)
        return [part.split("-")[0] for part in parts]
    return [f"{mix_id}_s{k + 1}" for k in range(num_spks)]


def _sets_in(split_dir: pathlib.Path, style: str, num_spks: int) -> List[SourceSet]:
    """Source sets ``s1/<name>.wav``, ``s2/<name>.wav``... of one split folder."""
    sets = []
    for s1 in sorted((split_dir / "s1").glob("*.wav")):
        files = [split_dir / name / s1.name for name in _source_names(num_spks)]
        missing = [f for f in files if not f.is_file()]
        if missing:
            logger.warning("skipping %s: no matching source %s", s1, missing[0])
            continue
        sets.append(SourceSet(s1.stem, files, _speakers_from_id(s1.stem, style, num_spks)))
    if not sets:
        names = "/*.wav with ".join(_source_names(num_spks))
        raise FileNotFoundError(f"no source sets ({names}/*.wav) in {split_dir}")
    return sets


def _wsj0_base(data_folder, sample_rate: int, num_spks: int) -> pathlib.Path:
    """The ``<root>/{N}speakers/wav8k/min`` folder holding ``{tr,cv,tt}``."""
    return _mode_root(data_folder, f"{num_spks}speakers", sample_rate,
                      [f"{s}/{name}" for s in WSJ0_SPLITS.values() for name in _source_names(num_spks)],
                      _layout(WSJ0_LAYOUT, num_spks))


def find_wsj0_mix(data_folder, sample_rate: int, num_spks: int = 2) -> Dict[str, List[SourceSet]]:
    """Source sets of WSJ0-2mix or WSJ0-3mix per split ``train``/``valid``/``test``.

    Example
    -------
    >>> import tempfile
    >>> find_wsj0_mix(tempfile.mkdtemp(), 8000, num_spks=3)
    Traceback (most recent call last):
     ...
    FileNotFoundError: no corpus found under ...; expected the layout <data_folder>/3speakers/wav{8k,16k}/...
    """
    base = _wsj0_base(data_folder, sample_rate, num_spks)
    return {split: _sets_in(base / sub, "wsj0", num_spks) for split, sub in WSJ0_SPLITS.items()}


def _wham_noise_root(data_folder, noise_folder) -> pathlib.Path:
    root = pathlib.Path(data_folder)
    candidates = [pathlib.Path(noise_folder)] if noise_folder else []
    for base in (root, *root.parents[:4]):
        candidates.append(base / "wham_noise")
    return _find_root(candidates, list(WSJ0_SPLITS.values()), "<noise_folder or wham_noise>/{tr,cv,tt}/*.wav",
                      noise_folder or data_folder)


def _attach_noise(sets: List[SourceSet], noise_dir: pathlib.Path, rng: np.random.Generator):
    """Give each set its same-name noise file, else a random one of the split."""
    pool = sorted(noise_dir.glob("*.wav"))
    if not pool:
        raise FileNotFoundError(f"no noise files (*.wav) in {noise_dir}")
    for item in sets:
        same = noise_dir / item.files[0].name
        item.noise = same if same.is_file() else pool[int(rng.integers(len(pool)))]


def find_wham(data_folder, sample_rate: int, noise_folder=None, seed: int = 1234) -> Dict[str, List[SourceSet]]:
    """WSJ0-2mix source sets with a WHAM! noise file each (same name, else a seeded random one)."""
    splits = find_wsj0_mix(data_folder, sample_rate, 2)
    noise_root = _wham_noise_root(data_folder, noise_folder)
    rng = np.random.default_rng(seed)
    for split, sub in WSJ0_SPLITS.items():
        _attach_noise(splits[split], noise_root / sub, rng)
    return splits


def _libri_base(data_folder, sample_rate: int, num_spks: int) -> pathlib.Path:
    """The ``<root>/Libri{N}Mix/wav8k/min`` folder holding ``{train-*,dev,test}``."""
    return _mode_root(data_folder, f"Libri{num_spks}Mix", sample_rate, ["dev/s1", "test/s1"],
                      _layout(LIBRI_LAYOUT, num_spks))


def find_librimix(data_folder, sample_rate: int, num_spks: int = 2, noisy: bool = False) -> Dict[str, List[SourceSet]]:
    """Source sets of Libri2Mix or Libri3Mix (all ``train-*`` subsets for training)."""
    base = _libri_base(data_folder, sample_rate, num_spks)
    train_dirs = sorted(d for d in base.glob("train-*") if (d / "s1").is_dir())
    if not train_dirs:
        raise FileNotFoundError(f"no train-* subset in {base}; expected the layout {_layout(LIBRI_LAYOUT, num_spks)}")
    splits = {
        "train": [item for d in train_dirs for item in _sets_in(d, "libri", num_spks)],
        "valid": _sets_in(base / "dev", "libri", num_spks),
        "test": _sets_in(base / "test", "libri", num_spks),
    }
    if noisy:
        for split in SPLITS:
            for item in splits[split]:
                item.noise = item.files[0].parent.parent / "noise" / item.files[0].name
                if not item.noise.is_file():
                    raise FileNotFoundError(f"missing noise file {item.noise} (Libri{num_spks}Mix noise/ folder)")
    return splits


def _mode_root(data_folder, corpus_folder: str, sample_rate: int, required, layout: str) -> pathlib.Path:
    """``<root>/<corpus_folder>/wav8k/{min,max}`` (or a part of that path) holding ``required``."""
    root, rate = pathlib.Path(data_folder), _rate_folder(sample_rate)
    candidates = []
    for mode in ("min", "max"):
        candidates += [root / corpus_folder / rate / mode, root / rate / mode, root / mode]
    candidates.append(root)
    return _find_root(candidates, required, layout, data_folder)


def _wham_mix_test_dir(data_folder, sample_rate: int, noise_folder=None, wham_folder=None) -> pathlib.Path:
    """``tt`` folder of the WHAM! mixtures written by the WHAM! scripts."""
    rate = _rate_folder(sample_rate)
    if wham_folder:
        roots = [pathlib.Path(wham_folder)]
    else:
        root = pathlib.Path(data_folder)
        bases = [root, *root.parents[:4]] + ([pathlib.Path(noise_folder).parent] if noise_folder else [])
        roots = [base / name for base in bases for name in ("", *WHAM_MIX_NAMES)]
    for top in roots:
        for cand in (top / rate / "min", top / rate / "max", top / "min", top / "max", top):
            if (cand / "tt" / "mix_both").is_dir():
                return cand / "tt"
    where = f"in --wham_folder {wham_folder}" if wham_folder else (
        f"in {data_folder}, beside it or above it (looked for {', '.join(WHAM_MIX_NAMES)} folders)")
    raise FileNotFoundError(
        f"no released WHAM! test mixtures found {where}; expected the layout {WHAM_MIX_LAYOUT} "
        f"(mix_both = the noisy 2-speaker mixtures, written by the WHAM! scripts). Pass "
        f"--wham_folder <that folder>, {OFFICIAL_HINT}")


def _official_in(split_dir: pathlib.Path, mix_sub: str, noise_sub: Optional[str], style: str, num_spks: int,
                 layout: str) -> List[OfficialMixture]:
    """Every mixture of ``split_dir/mix_sub`` with its references; none may be missing."""
    mix_dir = split_dir / mix_sub
    mixes = sorted(mix_dir.glob("*.wav"))
    if not mixes:
        raise FileNotFoundError(
            f"no official test mixtures (*.wav) in {mix_dir}; expected the layout {layout}, {OFFICIAL_HINT}")
    out = []
    for mix in mixes:
        subs = _source_names(num_spks) + ([noise_sub] if noise_sub else [])
        files = {sub: split_dir / sub / mix.name for sub in subs}
        for sub, path in files.items():
            if not path.is_file():
                raise FileNotFoundError(
                    f"official test mixture {mix} has no {sub} reference {path}; the released test set "
                    f"must be complete (expected the layout {layout})")
        out.append(OfficialMixture(mix.stem, mix, [files[s] for s in _source_names(num_spks)],
                                   _speakers_from_id(mix.stem, style, num_spks),
                                   files[noise_sub] if noise_sub else None))
    return out


def official_wsj0_mix(data_folder, sample_rate: int, num_spks: int = 2) -> List[OfficialMixture]:
    """The released WSJ0-2mix / WSJ0-3mix test mixtures ``tt/mix``, sorted by ID.

    Example
    -------
    >>> import tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for sub in ("tr/s1", "tr/s2", "cv/s1", "cv/s2", "tt/s1", "tt/s2", "tt/mix"):
    ...     (root / "2speakers/wav8k/min" / sub).mkdir(parents=True)
    >>> for sub in ("s1", "s2", "mix"):
    ...     (root / "2speakers/wav8k/min/tt" / sub / "011a010d_0.5_20do010c_-0.5.wav").touch()
    >>> [(m.id, m.mix.parent.name, m.speakers) for m in official_wsj0_mix(root, 8000)]
    [('011a010d_0.5_20do010c_-0.5', 'mix', ['011', '20d'])]
    """
    layout = _layout(WSJ0_LAYOUT.replace("{tr,cv,tt}/{sources}", "tt/{mix,sources}"), num_spks)
    return _official_in(_wsj0_base(data_folder, sample_rate, num_spks) / "tt", "mix", None, "wsj0", num_spks, layout)


def official_wham(data_folder, sample_rate: int, noise_folder=None, wham_folder=None) -> List[OfficialMixture]:
    """The released WHAM! test mixtures ``tt/mix_both`` (the noisy two-speaker task), with their
    own rescaled ``s1``/``s2`` and ``noise``."""
    test_dir = _wham_mix_test_dir(data_folder, sample_rate, noise_folder, wham_folder)
    return _official_in(test_dir, "mix_both", "noise", "wsj0", 2, WHAM_MIX_LAYOUT)


def official_librimix(data_folder, sample_rate: int, num_spks: int = 2, noisy: bool = False) -> List[OfficialMixture]:
    """The released LibriMix test mixtures: ``test/mix_clean`` (``noisy``: ``test/mix_both`` and ``noise``)."""
    mix_sub = "mix_both" if noisy else "mix_clean"
    layout = _layout(LIBRI_LAYOUT.replace("{train-360|train-100,dev,test}/{sources,noise}",
                                          f"test/{{{mix_sub},sources{',noise' if noisy else ''}}}"), num_spks)
    return _official_in(_libri_base(data_folder, sample_rate, num_spks) / "test", mix_sub,
                        "noise" if noisy else None, "libri", num_spks, layout)


def _audio_files(folder: pathlib.Path) -> List[pathlib.Path]:
    """Audio files under ``folder`` (recursively); unsupported formats are reported and skipped."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        suffix = path.suffix.lower()
        if suffix in SUPPORTED_SUFFIXES:
            files.append(path)
        elif suffix not in IGNORED_SUFFIXES:
            logger.warning("skipping %s: unsupported audio format %r (use one of %s)", path, suffix, SUPPORTED_SUFFIXES)
    return files


def find_folder(data_folder) -> Dict[str, List[pathlib.Path]]:
    """Audio files per speaker of a ``<speaker>/<file>`` folder.

    Files with an unsupported audio format are reported and skipped; text and
    metadata files are ignored silently.

    Example
    -------
    >>> import tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("a/1.wav", "a/2.flac", "b/x/3.wav", "b/notes.txt"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True)
    ...     (root / name).touch()
    >>> {spk: [f.name for f in files] for spk, files in find_folder(root).items()}
    {'a': ['1.wav', '2.flac'], 'b': ['3.wav']}
    """
    root = pathlib.Path(data_folder)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist; expected the layout <data_folder>/<speaker>/<file>.{{wav,flac}}")
    speakers = {}
    for spk_dir in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files = _audio_files(spk_dir)
        if files:
            speakers[spk_dir.name] = files
    if not speakers:
        raise FileNotFoundError(f"no audio files in {root}; expected the layout <data_folder>/<speaker>/<file>.{{wav,flac}}")
    return speakers


def find_noise_folder(noise_folder) -> Dict[str, List[pathlib.Path]]:
    """Noise files of a folder, per split: its ``train``/``valid``/``test`` folders, else all its files.

    Without split folders every split gets all the files (``"all"`` key);
    :func:`split_noise` then divides them.

    Example
    -------
    >>> import tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("cafe.wav", "street/1.flac"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True)
    ...     (root / name).touch()
    >>> {k: [f.name for f in v] for k, v in find_noise_folder(root).items()}
    {'all': ['cafe.wav', '1.flac']}
    """
    root = pathlib.Path(noise_folder)
    if not root.is_dir():
        raise FileNotFoundError(f"noise folder {root} does not exist; expected <noise_folder>/**/<file>.{{wav,flac}}")
    if all((root / split).is_dir() for split in SPLITS):
        found = {split: _audio_files(root / split) for split in SPLITS}
    else:
        found = {"all": _audio_files(root)}
    for split, files in found.items():
        if not files:
            raise FileNotFoundError(f"no noise files in {root / split if split != 'all' else root}; expected "
                                    f"<noise_folder>/**/<file>.{{wav,flac}}")
    return found


def split_noise(files: Sequence[pathlib.Path], seed: int, folder) -> Dict[str, List[pathlib.Path]]:
    """Split a list of noise files disjointly into train/valid/test (at least one each).

    Example
    -------
    >>> files = [pathlib.Path(f"n{i}.wav") for i in range(10)]
    >>> split = split_noise(files, seed=1, folder="noise")
    >>> [len(split[s]) for s in SPLITS], sorted(sum(split.values(), [])) == sorted(files)
    ([7, 1, 2], True)
    """
    files = sorted(files)
    n = len(files)
    if n < 3:
        raise ValueError(f"noise folder {folder} has {n} usable noise files; at least 3 are needed to split them "
                         "into train/valid/test (or give it train/, valid/ and test/ folders)")
    n_test = max(1, int(round(NOISE_SPLIT_FRACTIONS["test"] * n)))
    n_valid = max(1, int(round(NOISE_SPLIT_FRACTIONS["valid"] * n)))
    order = [files[i] for i in np.random.default_rng([seed, 30]).permutation(n)]
    return {"train": sorted(order[n_test + n_valid:]), "valid": sorted(order[n_test:n_test + n_valid]),
            "test": sorted(order[:n_test])}


def split_speakers(speakers: Sequence[str], seed: int, valid_fraction: float = 0.1, test_fraction: float = 0.2,
                   min_per_split: int = 2) -> Dict[str, List[str]]:
    """Split speakers disjointly into train/valid/test, each with at least ``min_per_split`` speakers.

    The sorted speaker list is shuffled with ``seed``, so the split depends
    only on the set of speakers and the seed.

    Example
    -------
    >>> split = split_speakers([str(i) for i in range(15)], seed=1)
    >>> [len(split[s]) for s in ("train", "valid", "test")]
    [10, 2, 3]
    >>> [len(v) for v in split_speakers([str(i) for i in range(15)], seed=1, min_per_split=3).values()]
    [3, 3, 9]
    """
    speakers = sorted(speakers)
    n = len(speakers)
    n_test = max(min_per_split, int(round(test_fraction * n)))
    n_valid = max(min_per_split, int(round(valid_fraction * n)))
    if n - n_test - n_valid < min_per_split:
        raise ValueError(f"need at least {3 * min_per_split} speakers with usable audio to split train/valid/test "
                         f"with {min_per_split} speakers each, found {n}: {speakers}")
    order = [speakers[i] for i in np.random.default_rng(seed).permutation(n)]
    return {
        "test": sorted(order[:n_test]),
        "valid": sorted(order[n_test : n_test + n_valid]),
        "train": sorted(order[n_test + n_valid :]),
    }
