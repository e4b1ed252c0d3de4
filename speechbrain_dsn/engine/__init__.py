"""The fast inference engine: slimmable layers and the masker, sliced and routed.

The reference model (:mod:`speechbrain_dsn.layers`, :mod:`speechbrain_dsn.masker`)
defines the numbers with the masked path of the paper.  This package computes
the same numbers at given levels without doing the work of inactive heads and
neurons, which turns saved MACs into saved time:

* :mod:`.route`: which token runs at which level (typed :class:`Route`, built
  once per layout and forward pass);
* :mod:`.layers`: sliced and routed execution of the layers, the uniform /
  routed / in-place dispatch;
* :mod:`.masker`: the masker forward pass channels last.

Nothing here owns parameters; the functions run the modules of the reference
model.  ``tests/test_engine.py`` and ``tests/test_masker.py`` holds the oracle tests: engine == reference
(masked path) on every track, and both == stock SepFormer at full width.
"""

from .layers import column_slice_t, route_for, run_block, run_layer, run_stack
from .masker import masker_forward, overlap_add, segment
from .route import Pack, Route

__all__ = [
    "Pack",
    "Route",
    "column_slice_t",
    "masker_forward",
    "overlap_add",
    "route_for",
    "run_block",
    "run_layer",
    "run_stack",
    "segment",
]
