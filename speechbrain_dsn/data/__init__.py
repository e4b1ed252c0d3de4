"""Data preparation and loading for DSN speech separation (paper Sections IV-A, IV-C).

* :mod:`~speechbrain_dsn.data.vad`: WebRTC speech activity and speech boundaries.
* :mod:`~speechbrain_dsn.data.mixing`: overlap-controlled mixing with partial noise.
* :mod:`~speechbrain_dsn.data.audio`: audio reading/validation and speech regions.
* :mod:`~speechbrain_dsn.data.corpora`: WSJ0-2mix, WHAM!, Libri2Mix and folder layouts.
* :mod:`~speechbrain_dsn.data.prepare`: CSVs and fixed test conditions (``prepare_dsn_data``).
* :mod:`~speechbrain_dsn.data.dataio`: SpeechBrain datasets with on-the-fly mixing (``dataio_prep``).
"""

from speechbrain_dsn.data.dataio import dataio_prep
from speechbrain_dsn.data.mixing import Mixture, mix_sources, overlap_offset
from speechbrain_dsn.data.prepare import prepare_dsn_data
from speechbrain_dsn.data.vad import speech_activity, speech_boundaries

__all__ = [
    "Mixture",
    "dataio_prep",
    "mix_sources",
    "overlap_offset",
    "prepare_dsn_data",
    "speech_activity",
    "speech_boundaries",
]
