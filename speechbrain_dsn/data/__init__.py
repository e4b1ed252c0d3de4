"""Data preparation and loading for DSN speech separation (paper Sections IV-A, IV-C).

* :mod:`~speechbrain_dsn.data.vad`: WebRTC speech activity and speech boundaries.
* :mod:`~speechbrain_dsn.data.mixing`: overlap-controlled mixing of N sources with partial noise.
* :mod:`~speechbrain_dsn.data.audio`: audio reading/validation and speech regions.
* :mod:`~speechbrain_dsn.data.corpora`: WSJ0-2/3mix, WHAM!, Libri2/3Mix, folder and noise layouts.
* :mod:`~speechbrain_dsn.data.registry`: the corpora as registry entries (``CORPORA``).
* :mod:`~speechbrain_dsn.data.columns`: CSV columns for ``num_spks`` sources.
* :mod:`~speechbrain_dsn.data.tables`: source checks, CSV rows and materialised test mixtures.
* :mod:`~speechbrain_dsn.data.prepare`: find, validate and write stages (``prepare_dsn_data``).
* :mod:`~speechbrain_dsn.data.onthefly`: on-the-fly training mixtures (``OnTheFlyMixer``).
* :mod:`~speechbrain_dsn.data.dataio`: SpeechBrain datasets with on-the-fly mixing (``dataio_prep``).
"""

from speechbrain_dsn.data.dataio import dataio_prep
from speechbrain_dsn.data.mixing import Mixture, mix_sources, mix_utterances, overlap_offset
from speechbrain_dsn.data.prepare import prepare_dsn_data
from speechbrain_dsn.data.vad import speech_activity, speech_boundaries

__all__ = [
    "Mixture",
    "dataio_prep",
    "mix_sources",
    "mix_utterances",
    "overlap_offset",
    "prepare_dsn_data",
    "speech_activity",
    "speech_boundaries",
]
