"""Recipe plumbing shared by ``train.py``, the complexity CLI and the tests.

Every file in ``hparams/`` is a complete HyperPyYAML recipe; :func:`load_hparams`
is ``hyperpyyaml.load_hyperpyyaml`` on a path (what ``train.py`` does with
``sb.parse_arguments``' overrides), and the warm start of a DSN from a stock
SepFormer goes through SpeechBrain's ``Pretrainer`` with a strict load hook.
"""

import os
from typing import Optional, Union

from hyperpyyaml import load_hyperpyyaml

__all__ = ["load_hparams", "load_pretrained_separator", "load_state_strictly"]


def load_hparams(path: str, overrides: Optional[Union[str, dict]] = None) -> dict:
    """``load_hyperpyyaml(open(path), overrides)``: a recipe YAML with overrides (a YAML string or a dict).

    Example
    -------
    >>> hp = load_hparams("hparams/dsn_2level.yaml", {"output_folder": "/tmp/dsn_doctest"})
    >>> hp["model"].get_config()["utilization_levels"], sorted(hp["modules"])
    ([0.125, 1.0], ['decoder', 'encoder', 'masknet'])
    """
    with open(path) as fin:
        return load_hyperpyyaml(fin, overrides or {})


# Keys a separator checkpoint may lack: a stock SepFormer has no gating module.
OPTIONAL_PREFIXES = ("gating.",)
SEPARATOR_MODULES = ("encoder", "masknet", "decoder")


def load_state_strictly(module, path, optional_prefixes=OPTIONAL_PREFIXES) -> None:
    """Loads a checkpoint into ``module``; every key must match except ``optional_prefixes``.

    A SpeechBrain ``Pretrainer`` hook (``custom_hooks``): SpeechBrain's own
    parameter transfer loads non-strictly and only warns, so a checkpoint of
    another architecture would silently leave layers at their random
    initialisation. Here any unexpected, missing or mis-shaped key is an
    error that names the file, and nothing is loaded then.

    Example
    -------
    >>> import tempfile, os, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "m.ckpt")
    >>> torch.save(torch.nn.Linear(2, 3).state_dict(), path)
    >>> load_state_strictly(torch.nn.Linear(2, 3), path)
    >>> load_state_strictly(torch.nn.Linear(2, 4), path)
    Traceback (most recent call last):
     ...
    ValueError: .../m.ckpt does not fit Linear: weight has shape (3, 2) in the file, (4, 2) in the model; ...
    """
    import torch

    state = torch.load(path, map_location="cpu")
    own = module.state_dict()
    problems = [
        f"{k} has shape {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not k.startswith(tuple(optional_prefixes)))
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if missing:
        problems.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if problems:
        raise ValueError(
            f"{path} does not fit {type(module).__name__}: "
            + "; ".join(problems)
            + "; check that the recipe's model hyperparameters match the checkpoint's"
        )
    module.load_state_dict(state, strict=False)


def load_pretrained_separator(modules: dict, source: str, savedir: str) -> None:
    """Initialises encoder, masknet and decoder from a separator folder (warm start).

    ``source`` holds ``encoder.ckpt``, ``masknet.ckpt`` and ``decoder.ckpt``
    of a stock SepFormer or a DSN of the same configuration (an inference
    folder written by the recipe, or a SpeechBrain separation model). As in
    SpeechBrain's separation recipes (``pretrained_separator``), the files
    go through a ``Pretrainer``; the load is strict except for the gating
    module, which starts fresh when the checkpoint has none.
    """
    from speechbrain.utils.distributed import run_on_main
    from speechbrain.utils.parameter_transfer import Pretrainer

    pretrainer = Pretrainer(
        collect_in=savedir,
        loadables={k: modules[k] for k in SEPARATOR_MODULES},
        paths={k: os.path.join(source, f"{k}.ckpt") for k in SEPARATOR_MODULES},
        custom_hooks={k: load_state_strictly for k in SEPARATOR_MODULES},
    )
    run_on_main(pretrainer.collect_files)
    pretrainer.load_collected()
