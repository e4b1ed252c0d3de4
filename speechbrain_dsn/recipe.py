"""Recipe plumbing shared by ``train.py``, the complexity CLI and the tests.

The YAML variants in ``hparams/`` are one base file plus small variant files.
A variant names its base with a top-level ``extends:`` key; every other key
of the variant overrides the base, and command-line overrides apply last::

    # hparams/dsn_3level.yaml
    extends: base.yaml
    utilization_levels: [0.125, 0.5, 1.0]

Everything is then loaded by HyperPyYAML from the base file, so ``!ref``,
``!new`` and overrides behave as in any SpeechBrain recipe.
"""

import os
from typing import Optional, Union

import ruamel.yaml
from hyperpyyaml import load_hyperpyyaml, resolve_references

__all__ = ["load_hparams", "load_pretrained_separator", "load_state_strictly", "resolve_hparams", "save_hparams"]


def _as_dict(overrides: Optional[Union[str, dict]]) -> dict:
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    loaded = ruamel.yaml.YAML(typ="safe", pure=True).load(overrides)
    if not isinstance(loaded, dict):
        raise ValueError(f"overrides must be a YAML mapping, got {overrides!r}")
    return loaded


def resolve_hparams(path: str, overrides: Optional[Union[str, dict]] = None):
    """Follows ``extends:`` chains; returns (base YAML text, base dir, overrides).

    Arguments
    ---------
    path : str
        A YAML file, either complete or a variant with ``extends:``.
    overrides : str or dict, optional
        Overrides (a YAML string as given by ``sb.parse_arguments``, or a dict).

    Returns
    -------
    tuple
        The text of the file that has no ``extends:``, its directory, and the
        merged overrides (variant keys first, then ``overrides``).
    """
    merged = _as_dict(overrides)
    seen = set()
    while True:
        path = os.path.abspath(path)
        if path in seen:
            raise ValueError(f"circular 'extends:' chain at {path}")
        seen.add(path)
        with open(path) as fin:
            text = fin.read()
        head = ruamel.yaml.YAML(typ="rt").load(text) or {}
        if "extends" not in head:
            return text, os.path.dirname(path), merged
        variant = {k: v for k, v in head.items() if k != "extends"}
        merged = {**_plain(variant), **merged}
        path = os.path.join(os.path.dirname(path), head["extends"])


def _plain(node):
    """Turns ruamel round-trip containers into plain Python values."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def load_hparams(path: str, overrides: Optional[Union[str, dict]] = None) -> dict:
    r"""Loads a recipe YAML (following ``extends:``) with HyperPyYAML.

    Arguments
    ---------
    path : str
        The YAML file.
    overrides : str or dict, optional
        Overrides applied after the variant's own keys.

    Returns
    -------
    dict
        The loaded hyperparameters; ``hparams["hparams_file_text"]`` holds the
        fully resolved base text and ``hparams["hparams_overrides"]`` the
        merged overrides (for saving alongside the results).

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "base.yaml"), "w") as f:
    ...     _ = f.write("levels: [1.0]\nwidth: 4\nsize: !ref <width> * 2\n")
    >>> with open(os.path.join(folder, "variant.yaml"), "w") as f:
    ...     _ = f.write("extends: base.yaml\nlevels: [0.5, 1.0]\n")
    >>> hp = load_hparams(os.path.join(folder, "variant.yaml"), "width: 8")
    >>> hp["levels"], hp["size"]
    ([0.5, 1.0], 16)
    """
    text, _, merged = resolve_hparams(path, overrides)
    hparams = load_hyperpyyaml(text, merged)
    hparams["hparams_file_text"] = text
    hparams["hparams_overrides"] = merged
    return hparams


def save_hparams(hparams: dict, path: str) -> str:
    """Writes the resolved hyperparameters (base file + all overrides) to ``path``.

    Arguments
    ---------
    hparams : dict
        As returned by :func:`load_hparams`.
    path : str
        Output YAML file.

    Returns
    -------
    str
        The path.
    """
    resolved = resolve_references(hparams["hparams_file_text"], hparams["hparams_overrides"]).getvalue()
    tmp = path + ".tmp"
    with open(tmp, "w") as fout:
        fout.write(resolved)
    os.replace(tmp, path)
    return path


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
    problems = [f"{k} has shape {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model"
                for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not k.startswith(tuple(optional_prefixes)))
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if missing:
        problems.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if problems:
        raise ValueError(f"{path} does not fit {type(module).__name__}: " + "; ".join(problems)
                         + "; check that the recipe's model hyperparameters match the checkpoint's")
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
