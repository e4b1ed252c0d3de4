"""Locate the source utterances of each supported corpus (paper Section IV-A).

The paper uses WSJ0-2mix (min, 8 kHz) and WHAM!; LibriMix and any
``<speaker>/<file>`` folder are supported as well. This module only finds
files and pairs them; reading, VAD and mixing happen in
:mod:`speechbrain_dsn.data.prepare`. Splits are always called
``train``, ``valid`` and ``test``.

Expected layouts (the root may be given at any level shown):

* ``wsj0-2mix``: ``<root>/2speakers/wav8k/min/{tr,cv,tt}/{s1,s2}/*.wav``
  (``wav16k`` for 16 kHz; ``max`` accepted when ``min`` is absent).
* ``wham``: the above plus ``wham_noise/{tr,cv,tt}/*.wav`` (``--noise_folder``
  or a ``wham_noise`` folder beside/inside the root).
* ``libri2mix``: ``<root>/Libri2Mix/wav8k/min/{train-360|train-100,dev,test}/{s1,s2,noise}``.
* ``folder``: ``<root>/<speaker>/**/<file>.{wav,flac,ogg}``.

The official test sets, as released (:func:`find_official_test`, condition
``official``): WSJ0-2mix ``tt/{mix,s1,s2}``; WHAM! ``tt/{mix_both,s1,s2,noise}``
of the tree written by the WHAM! scripts (``--wham_folder``, or a ``wham``,
``wham_wav``, ``wham_original`` or ``wham_mix`` folder beside/inside the root,
or the root itself); Libri2Mix ``test/{mix_clean,s1,s2}`` (noisy:
``test/{mix_both,s1,s2,noise}``).
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
WSJ0_LAYOUT = "<data_folder>/2speakers/wav{8k,16k}/{min,max}/{tr,cv,tt}/{s1,s2}/*.wav"
WHAM_MIX_LAYOUT = "<wham_folder>/wav{8k,16k}/{min,max}/tt/{mix_both,s1,s2,noise}/*.wav"
WHAM_MIX_NAMES = ("wham", "wham_wav", "wham_original", "wham_mix")
OFFICIAL_HINT = "or set official_test: False (--official_test False) to skip the official test set"
LIBRI_LAYOUT = (
    "<data_folder>/Libri2Mix/wav{8k,16k}/{min,max}/{train-360|train-100,dev,test}/{s1,s2,noise}/*.wav"
)


@dataclass
class SourcePair:
    """Two source files of one corpus mixture (and its noise file, if any)."""

    id: str
    s1: pathlib.Path
    s2: pathlib.Path
    s1_spk: str
    s2_spk: str
    noise: Optional[pathlib.Path] = None


@dataclass
class OfficialMixture:
    """One mixture of a released test set: its files, used as they are."""

    id: str
    mix: pathlib.Path
    s1: pathlib.Path
    s2: pathlib.Path
    s1_spk: str
    s2_spk: str
    noise: Optional[pathlib.Path] = None


def _rate_folder(sample_rate: int) -> str:
    if sample_rate not in (8000, 16000):
        raise ValueError(f"this corpus exists at 8000 or 16000 Hz only, got sample_rate={sample_rate}")
    return f"wav{sample_rate // 1000}k"


def _find_root(candidates: Sequence[pathlib.Path], required: Sequence[str], layout: str, data_folder) -> pathlib.Path:
    for cand in candidates:
        if all((cand / sub).is_dir() for sub in required):
            return cand
    raise FileNotFoundError(f"no corpus found under {data_folder}; expected the layout {layout}")


def _speakers_from_id(mix_id: str, corpus: str) -> List[str]:
    """Speaker ids encoded in a mixture name (fallback: unique per mixture)."""
    parts = mix_id.split("_")
    if corpus == "wsj0-2mix" and len(parts) == 4:  # 011a010d_0.54_20do010c_-0.54
        return [parts[0][:3], parts[2][:3]]
    if corpus == "libri2mix" and len(parts) == 2:  # 1089-134686-0000_121-121726-0000
        return [parts[0].split("-")[0], parts[1].split("-")[0]]
    return [f"{mix_id}_s1", f"{mix_id}_s2"]


def _pairs_in(split_dir: pathlib.Path, corpus: str) -> List[SourcePair]:
    pairs = []
    for s1 in sorted((split_dir / "s1").glob("*.wav")):
        s2 = split_dir / "s2" / s1.name
        if not s2.is_file():
            logger.warning("skipping %s: no matching source %s", s1, s2)
            continue
        spk1, spk2 = _speakers_from_id(s1.stem, corpus)
        pairs.append(SourcePair(s1.stem, s1, s2, spk1, spk2))
    if not pairs:
        raise FileNotFoundError(f"no source pairs (s1/*.wav with s2/*.wav) in {split_dir}")
    return pairs


def find_wsj0_2mix(data_folder, sample_rate: int) -> Dict[str, List[SourcePair]]:
    """Source pairs of WSJ0-2mix per split ``train``/``valid``/``test``.

    Example
    -------
    >>> import tempfile
    >>> find_wsj0_2mix(tempfile.mkdtemp(), 8000)
    Traceback (most recent call last):
     ...
    FileNotFoundError: no corpus found under ...; expected the layout <data_folder>/2speakers/wav{8k,16k}/...
    """
    base = _wsj0_base(data_folder, sample_rate)
    return {split: _pairs_in(base / sub, "wsj0-2mix") for split, sub in WSJ0_SPLITS.items()}


def _wsj0_base(data_folder, sample_rate: int) -> pathlib.Path:
    """The ``<root>/2speakers/wav8k/min`` folder holding ``{tr,cv,tt}``."""
    return _mode_root(data_folder, "2speakers", sample_rate, [f"{s}/s1" for s in WSJ0_SPLITS.values()], WSJ0_LAYOUT)


def _wham_noise_root(data_folder, noise_folder) -> pathlib.Path:
    root = pathlib.Path(data_folder)
    candidates = [pathlib.Path(noise_folder)] if noise_folder else []
    for base in (root, *root.parents[:4]):
        candidates.append(base / "wham_noise")
    return _find_root(candidates, list(WSJ0_SPLITS.values()), "<noise_folder or wham_noise>/{tr,cv,tt}/*.wav", noise_folder or data_folder)


def _attach_noise(pairs: List[SourcePair], noise_dir: pathlib.Path, rng: np.random.Generator):
    """Give each pair its same-name noise file, else a random one of the split."""
    pool = sorted(noise_dir.glob("*.wav"))
    if not pool:
        raise FileNotFoundError(f"no noise files (*.wav) in {noise_dir}")
    for pair in pairs:
        same = noise_dir / pair.s1.name
        pair.noise = same if same.is_file() else pool[int(rng.integers(len(pool)))]


def find_wham(data_folder, sample_rate: int, noise_folder=None, seed: int = 1234) -> Dict[str, List[SourcePair]]:
    """WSJ0-2mix pairs with a WHAM! noise file each (same name, else a seeded random one)."""
    splits = find_wsj0_2mix(data_folder, sample_rate)
    noise_root = _wham_noise_root(data_folder, noise_folder)
    rng = np.random.default_rng(seed)
    for split, sub in WSJ0_SPLITS.items():
        _attach_noise(splits[split], noise_root / sub, rng)
    return splits


def find_libri2mix(data_folder, sample_rate: int, noisy: bool = False) -> Dict[str, List[SourcePair]]:
    """Source pairs of Libri2Mix (all ``train-*`` subsets for training)."""
    base = _libri_base(data_folder, sample_rate)
    train_dirs = sorted(d for d in base.glob("train-*") if (d / "s1").is_dir())
    if not train_dirs:
        raise FileNotFoundError(f"no train-* subset in {base}; expected the layout {LIBRI_LAYOUT}")
    splits = {
        "train": [p for d in train_dirs for p in _pairs_in(d, "libri2mix")],
        "valid": _pairs_in(base / "dev", "libri2mix"),
        "test": _pairs_in(base / "test", "libri2mix"),
    }
    if noisy:
        for split, dirs in (("train", train_dirs), ("valid", [base / "dev"]), ("test", [base / "test"])):
            for pair in splits[split]:
                pair.noise = pair.s1.parent.parent / "noise" / pair.s1.name
                if not pair.noise.is_file():
                    raise FileNotFoundError(f"missing noise file {pair.noise} (Libri2Mix noise/ folder)")
    return splits


def _libri_base(data_folder, sample_rate: int) -> pathlib.Path:
    """The ``<root>/Libri2Mix/wav8k/min`` folder holding ``{train-*,dev,test}``."""
    return _mode_root(data_folder, "Libri2Mix", sample_rate, ["dev/s1", "test/s1"], LIBRI_LAYOUT)


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


def _official_in(split_dir: pathlib.Path, mix_sub: str, noise_sub: Optional[str], corpus: str,
                 layout: str) -> List[OfficialMixture]:
    """Every mixture of ``split_dir/mix_sub`` with its references; none may be missing."""
    mix_dir = split_dir / mix_sub
    mixes = sorted(mix_dir.glob("*.wav"))
    if not mixes:
        raise FileNotFoundError(
            f"no official test mixtures (*.wav) in {mix_dir}; expected the layout {layout}, {OFFICIAL_HINT}")
    out = []
    for mix in mixes:
        files = {sub: split_dir / sub / mix.name for sub in ("s1", "s2") + ((noise_sub,) if noise_sub else ())}
        for sub, path in files.items():
            if not path.is_file():
                raise FileNotFoundError(
                    f"official test mixture {mix} has no {sub} reference {path}; the released test set "
                    f"must be complete (expected the layout {layout})")
        spk1, spk2 = _speakers_from_id(mix.stem, corpus)
        out.append(OfficialMixture(mix.stem, mix, files["s1"], files["s2"], spk1, spk2,
                                   files.get(noise_sub) if noise_sub else None))
    return out


def find_official_test(corpus: str, data_folder, sample_rate: int, noise_folder=None, wham_folder=None,
                       noisy: bool = False) -> List[OfficialMixture]:
    """The released test mixtures of WSJ0-2mix, WHAM! or Libri2Mix, sorted by ID.

    WSJ0-2mix: ``tt/mix``; WHAM!: ``tt/mix_both`` (the noisy two-speaker task)
    of the WHAM! tree, with its own rescaled ``s1``/``s2`` and ``noise``;
    Libri2Mix: ``test/mix_clean`` (``noisy``: ``test/mix_both`` and ``noise``).

    Example
    -------
    >>> import tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for sub in ("tr/s1", "cv/s1", "tt/s1", "tt/s2", "tt/mix"):
    ...     (root / "2speakers/wav8k/min" / sub).mkdir(parents=True)
    >>> for sub in ("s1", "s2", "mix"):
    ...     (root / "2speakers/wav8k/min/tt" / sub / "011a010d_0.5_20do010c_-0.5.wav").touch()
    >>> [(m.id, m.mix.parent.name, m.s1_spk, m.s2_spk) for m in find_official_test("wsj0-2mix", root, 8000)]
    [('011a010d_0.5_20do010c_-0.5', 'mix', '011', '20d')]
    """
    if corpus == "wsj0-2mix":
        layout = WSJ0_LAYOUT.replace("{tr,cv,tt}/{s1,s2}", "tt/{mix,s1,s2}")
        return _official_in(_wsj0_base(data_folder, sample_rate) / "tt", "mix", None, "wsj0-2mix", layout)
    if corpus == "wham":
        test_dir = _wham_mix_test_dir(data_folder, sample_rate, noise_folder, wham_folder)
        return _official_in(test_dir, "mix_both", "noise", "wsj0-2mix", WHAM_MIX_LAYOUT)
    if corpus == "libri2mix":
        mix_sub = "mix_both" if noisy else "mix_clean"
        layout = LIBRI_LAYOUT.replace("{train-360|train-100,dev,test}/{s1,s2,noise}",
                                      f"test/{{{mix_sub},s1,s2{',noise' if noisy else ''}}}")
        return _official_in(_libri_base(data_folder, sample_rate) / "test", mix_sub, "noise" if noisy else None,
                            "libri2mix", layout)
    raise ValueError(f"no official test set for corpus {corpus!r} (only wsj0-2mix, wham, libri2mix)")


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
        files = []
        for path in sorted(p for p in spk_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            suffix = path.suffix.lower()
            if suffix in SUPPORTED_SUFFIXES:
                files.append(path)
            elif suffix not in IGNORED_SUFFIXES:
                logger.warning("skipping %s: unsupported audio format %r (use one of %s)", path, suffix, SUPPORTED_SUFFIXES)
        if files:
            speakers[spk_dir.name] = files
    if not speakers:
        raise FileNotFoundError(f"no audio files in {root}; expected the layout <data_folder>/<speaker>/<file>.{{wav,flac}}")
    return speakers


def split_speakers(speakers: Sequence[str], seed: int, valid_fraction: float = 0.1, test_fraction: float = 0.2) -> Dict[str, List[str]]:
    """Split speakers disjointly into train/valid/test, each with at least 2 speakers.

    The sorted speaker list is shuffled with ``seed``, so the split depends
    only on the set of speakers and the seed.

    Example
    -------
    >>> split = split_speakers([str(i) for i in range(15)], seed=1)
    >>> [len(split[s]) for s in ("train", "valid", "test")]
    [10, 2, 3]
    """
    speakers = sorted(speakers)
    n = len(speakers)
    n_test = max(2, int(round(test_fraction * n)))
    n_valid = max(2, int(round(valid_fraction * n)))
    if n - n_test - n_valid < 2:
        raise ValueError(f"need at least 6 speakers with usable audio to split train/valid/test, found {n}: {speakers}")
    order = [speakers[i] for i in np.random.default_rng(seed).permutation(n)]
    return {
        "test": sorted(order[:n_test]),
        "valid": sorted(order[n_test : n_test + n_valid]),
        "train": sorted(order[n_test + n_valid :]),
    }
