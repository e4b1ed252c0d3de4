"""Corpora as registry entries: how each one is found, read, levelled and noised.

Every corpus that :func:`~speechbrain_dsn.data.prepare.prepare_dsn_data`
accepts is a :class:`Corpus` in ``CORPORA``, keyed by its name (the recipe's
``corpus`` key). An entry says

* ``num_spks``: the sources per mixture of its layout (``None``: any, drawn
  from speaker folders);
* ``find``: its layout finder (:mod:`speechbrain_dsn.data.corpora`), and
  ``official``: the finder of its released test set, if it has one;
* ``strict_rate``: whether files must already have the working rate (the
  ``wav8k``/``wav16k`` corpora), or are resampled;
* ``drawn_gains``: whether levels are drawn (active-RMS normalisation + SIR,
  Section IV-A), or the corpus's own levels are kept (gains of 1);
* ``noise``: ``"none"``, ``"required"`` (WHAM!) or ``"optional"``, turned on
  by the option ``noise_option`` (``libri2mix_noisy`` for LibriMix's own
  ``noise/`` folder, ``noise_folder`` for the folder corpus).

One-speaker speech enhancement (``num_spks = 1``) needs noise: it is the
folder corpus with a ``noise_folder``. New corpora are added with
:func:`register`, with no change to the preparation code.
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

from speechbrain_dsn.data import corpora

__all__ = ["CORPORA", "Corpus", "get_corpus", "register", "unregister"]

NOISE_MODES = ("none", "required", "optional")


@dataclass(frozen=True)
class Corpus:
    """One registry entry (see the module docstring).

    ``find(data_folder, sample_rate, num_spks, options)`` returns the source
    sets per split (``train``/``valid``/``test``) of a corpus of mixtures, or,
    for a corpus of speaker folders (``num_spks=None``), the files per
    speaker; ``official(data_folder, sample_rate, num_spks, options)``
    returns the released test mixtures. ``options`` holds ``noise_folder``,
    ``wham_folder``, ``seed`` and ``noisy``.

    Example
    -------
    >>> get_corpus("wsj0-3mix").num_spks, get_corpus("folder").resolve_num_spks(None)
    (3, 2)
    """

    name: str
    num_spks: Optional[int]
    find: Callable
    strict_rate: bool
    drawn_gains: bool
    noise: str
    noise_option: Optional[str] = None
    official: Optional[Callable] = None
    defaults: Dict[str, float] = field(default_factory=dict)  # sizes and source cap when not given

    def __post_init__(self):
        if self.noise not in NOISE_MODES:
            raise ValueError(f"noise of corpus {self.name!r} must be one of {NOISE_MODES}, got {self.noise!r}")
        if self.noise == "optional" and not self.noise_option:
            raise ValueError(f"corpus {self.name!r} has optional noise but no noise_option turning it on")

    def resolve_num_spks(self, num_spks: Optional[int]) -> int:
        """The sources per mixture: ``num_spks``, checked against the layout (``None``: the layout's)."""
        if num_spks is not None and (int(num_spks) != num_spks or num_spks < 1):
            raise ValueError(f"num_spks must be a positive integer, got {num_spks!r}")
        if self.num_spks is None:
            return 2 if num_spks is None else int(num_spks)
        if num_spks is not None and num_spks != self.num_spks:
            others = [c.name for c in CORPORA.values() if c.num_spks == num_spks] or ["folder"]
            raise ValueError(f"corpus {self.name} has {self.num_spks} sources per mixture, but num_spks is "
                             f"{num_spks}; use num_spks: {self.num_spks}, or a corpus with {num_spks}: "
                             f"{', '.join(others)}")
        return self.num_spks

    def is_noisy(self, options: dict) -> bool:
        """Whether this preparation adds noise (``options``: the preparation's keyword arguments)."""
        if self.noise == "optional":
            return bool(options.get(self.noise_option))
        return self.noise == "required"


CORPORA: Dict[str, Corpus] = {}


def register(corpus: Corpus) -> Corpus:
    """Add an entry to ``CORPORA``; a name may be registered once."""
    if corpus.name in CORPORA:
        raise ValueError(f"corpus {corpus.name!r} is already registered")
    CORPORA[corpus.name] = corpus
    return corpus


def unregister(name: str) -> None:
    """Remove an entry (tests, plugins replacing one)."""
    CORPORA.pop(name)


def get_corpus(name: str) -> Corpus:
    """The entry of ``name``; an unknown name is an error listing the known ones.

    Example
    -------
    >>> get_corpus("timit")
    Traceback (most recent call last):
     ...
    ValueError: corpus must be one of ('wsj0-2mix', 'wham', 'libri2mix', 'wsj0-3mix', 'libri3mix', 'folder'), got 'timit'
    """
    if name not in CORPORA:
        raise ValueError(f"corpus must be one of {tuple(CORPORA)}, got {name!r}")
    return CORPORA[name]


def _wsj0_mix(num_spks):
    return Corpus(
        name=f"wsj0-{num_spks}mix", num_spks=num_spks, strict_rate=True, drawn_gains=False, noise="none",
        find=lambda root, rate, n, opts: corpora.find_wsj0_mix(root, rate, n),
        official=lambda root, rate, n, opts: corpora.official_wsj0_mix(root, rate, n))


def _librimix(num_spks):
    return Corpus(
        name=f"libri{num_spks}mix", num_spks=num_spks, strict_rate=True, drawn_gains=False, noise="optional",
        noise_option="libri2mix_noisy",
        find=lambda root, rate, n, opts: corpora.find_librimix(root, rate, n, opts["noisy"]),
        official=lambda root, rate, n, opts: corpora.official_librimix(root, rate, n, opts["noisy"]))


register(_wsj0_mix(2))
register(Corpus(
    name="wham", num_spks=2, strict_rate=True, drawn_gains=False, noise="required",
    find=lambda root, rate, n, opts: corpora.find_wham(root, rate, opts["noise_folder"], opts["seed"]),
    official=lambda root, rate, n, opts: corpora.official_wham(root, rate, opts["noise_folder"], opts["wham_folder"])))
register(_librimix(2))
register(_wsj0_mix(3))
register(_librimix(3))
# folder-corpus defaults sized for the bundled demo (a few CPU minutes end to end)
register(Corpus(
    name="folder", num_spks=None, strict_rate=False, drawn_gains=True, noise="optional", noise_option="noise_folder",
    find=lambda root, rate, n, opts: corpora.find_folder(root),
    defaults={"num_train": 24, "num_valid": 4, "num_test": 3, "max_source_seconds": 5.0}))
