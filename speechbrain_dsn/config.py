"""The one description of a DSN's architecture: :class:`DSNConfig`.

The recipe YAML builds :class:`~speechbrain_dsn.model.DSNSepformer` from these
fields, ``DSNSepformer.get_config()`` returns them, ``DSNSepformer.from_config``
rebuilds the model from them, and an inference folder stores them in its
``hyperparams.yaml`` (:mod:`speechbrain_dsn.inference`).  Every field is
required: a missing or unknown one is an error, never a silent default.

Components (the gating policy) are stored as ``{"class": "package.module.Class",
**keyword arguments}`` and rebuilt as ``functools.partial(Class, **kwargs)``,
the same object HyperPyYAML's ``!name:package.module.Class`` tag makes.
"""

import dataclasses
import functools
import pydoc
from typing import Callable, List, Optional

__all__ = ["DSNConfig", "build_component", "describe_component"]


@dataclasses.dataclass
class DSNConfig:
    """Architecture of a dynamic slimmable SepFormer (Table I names in brackets).

    Example
    -------
    >>> config = DSNConfig.from_dict({**DSNConfig.paper(), "utilization_levels": [1.0], "gating": None})
    >>> config.N_encoder_out, config.chunk_size
    (256, 50)
    >>> DSNConfig.from_dict({"num_spks": 2})
    Traceback (most recent call last):
    ...
    ValueError: model config lacks the fields ['utilization_levels', 'kernel_size', ...]
    """

    utilization_levels: List[float]
    num_spks: int
    kernel_size: int  # encoder kernel (stride: half of it)
    N_encoder_out: int  # encoder filters F
    num_dual_blocks: int  # dual-path blocks N
    num_layers: int  # transformer layers per intra / inter block
    nhead: int  # attention heads at full width
    d_ffn: int  # FFN neurons at full width
    chunk_size: int  # chunk size C
    norm: str  # Dual_Path_Model norm ("ln", "gln", "cln", "bn")
    skip_around_intra: bool
    linear_layer_after_inter_intra: bool
    dropout: float
    gating: Optional[dict]  # {"class": ..., **kwargs}; None for a static network

    @classmethod
    def from_dict(cls, values: dict) -> "DSNConfig":
        """Checks that ``values`` has exactly the fields, then builds the config."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in values]
        unknown = sorted(set(values) - set(names))
        if missing:
            raise ValueError(f"model config lacks the fields {missing}")
        if unknown:
            raise ValueError(f"model config has unknown fields {unknown}; expected {names}")
        config = cls(**{n: values[n] for n in names})
        config.utilization_levels = [float(u) for u in config.utilization_levels]
        if config.gating is not None:
            config.gating = dict(config.gating)
            build_component(config.gating)
        return config

    def to_dict(self) -> dict:
        """Plain values (lists, dicts, numbers, strings), ready for YAML or JSON."""
        return dataclasses.asdict(self)

    @staticmethod
    def paper() -> dict:
        """Section IV-B / Table I: the three-level DSN of the paper, as a dict."""
        return dict(
            utilization_levels=[0.125, 0.5, 1.0],
            num_spks=2,
            kernel_size=16,
            N_encoder_out=256,
            num_dual_blocks=2,
            num_layers=4,
            nhead=8,
            d_ffn=1024,
            chunk_size=50,
            norm="ln",
            skip_around_intra=True,
            linear_layer_after_inter_intra=False,
            dropout=0.0,
            gating={
                "class": "speechbrain_dsn.gating.GatingModule",
                "channels": 32,
                "nhead": 1,
                "d_ffn": 128,
                "context": 64,
                "tau": 1.0,
                "noise": True,
            },
        )


def describe_component(factory: Optional[Callable]) -> Optional[dict]:
    """``{"class": dotted path, **kwargs}`` of a class or a ``functools.partial`` of one.

    Example
    -------
    >>> from speechbrain_dsn.gating import GatingModule
    >>> describe_component(functools.partial(GatingModule, channels=16))
    {'class': 'speechbrain_dsn.gating.GatingModule', 'channels': 16}
    """
    if factory is None:
        return None
    kwargs = {}
    if isinstance(factory, functools.partial):
        if factory.args:
            raise ValueError(f"a component must take keyword arguments only, got {factory!r}")
        factory, kwargs = factory.func, dict(factory.keywords)
    if not isinstance(factory, type):
        raise TypeError(f"a component must be a class or a functools.partial of one, got {factory!r}")
    return {"class": f"{factory.__module__}.{factory.__qualname__}", **kwargs}


def build_component(description: Optional[dict]) -> Optional[Callable]:
    """The ``functools.partial`` that :func:`describe_component` described."""
    if description is None:
        return None
    kwargs = dict(description)
    path = kwargs.pop("class", None)
    cls = pydoc.locate(path) if isinstance(path, str) else None
    if not isinstance(cls, type):
        raise ValueError(f"component class {path!r} cannot be imported (in {description})")
    return functools.partial(cls, **kwargs)
