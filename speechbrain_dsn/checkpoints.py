"""Checkpoints that survive a kill at any moment, and the RNG state they carry.

SpeechBrain's ``Checkpointer`` writes a checkpoint folder's ``CKPT.yaml`` (the
file that makes the folder a checkpoint) *first* and the parameter files
after it, and deletes old checkpoints with ``shutil.rmtree``.  A job killed
while it saves or deletes leaves a folder that looks like a checkpoint but
lacks files or holds a truncated one; the next run picks it as the most
recent checkpoint and fails to load it, on every rerun.

:class:`AtomicCheckpointer` is a drop-in replacement (same arguments, same
folder layout, same checkpoints) that makes both operations atomic:

* a checkpoint is written into a hidden folder ``.tmp-CKPT+...``, its meta
  file last, every file flushed to disk, and only then renamed to
  ``CKPT+...`` (one ``rename``: the folder appears whole or not at all);
* a checkpoint is deleted by renaming it to a hidden ``.del-CKPT+...``
  first, then removing that folder;
* hidden leftovers of a killed run are removed when the checkpointer is
  created;
* a visible checkpoint that still cannot be loaded (written by another tool,
  or damaged on disk) is never loaded silently: the error names the folder
  and the file, and says how to resume from the previous checkpoint.

:class:`RNGState` is a recoverable holding the state of the global random
generators (torch, CUDA, numpy, random): a run resumed from a checkpoint
draws the random numbers (gating dropout, Gumbel noise) that the
uninterrupted run would have drawn.  It is optional on loading, so
checkpoints written before it was added still load.

:class:`EpochCounterWithStopper` is SpeechBrain's early-stopping epoch
counter with its checkpoint hooks registered (SpeechBrain 1.1 saves only its
epoch, so a resumed run forgot the best epoch and score).
"""

import collections.abc
import logging
import os
import pathlib
import random
import shutil
import warnings
import zipfile

import numpy as np
import torch
import yaml
from speechbrain.utils import epoch_loop
from speechbrain.utils.checkpoints import (
    DEFAULT_SAVE_HOOKS,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    ckpt_recency,
    get_default_hook,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import ddp_barrier, ddp_broadcast, if_main_process, is_distributed_initialized

__all__ = ["AtomicCheckpointer", "RNGState", "EpochCounterWithStopper", "CheckpointLoadError"]

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"  # a checkpoint being written
DEL_PREFIX = ".del-"  # a checkpoint being deleted


class CheckpointLoadError(RuntimeError):
    """A checkpoint folder that exists but cannot be loaded."""


def _fsync(path: pathlib.Path):
    """Flush a file or a folder to disk (best effort: some file systems refuse folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointer(Checkpointer):
    """A ``Checkpointer`` whose checkpoints appear whole or not at all.

    Takes the arguments of ``speechbrain.utils.checkpoints.Checkpointer``.
    Recoverables of type :class:`RNGState` are optional on loading.

    Example
    -------
    >>> import tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> layer = torch.nn.Linear(2, 2)
    >>> ckpt = AtomicCheckpointer(folder, {"layer": layer, "rng": RNGState()}).save_checkpoint()
    >>> sorted(p.name for p in ckpt.path.iterdir())
    ['CKPT.yaml', 'layer.ckpt', 'rng.ckpt']
    >>> [p.name.startswith(".") for p in folder.iterdir()]
    [False]
    """

    def __init__(
        self,
        checkpoints_dir,
        recoverables=None,
        custom_load_hooks=None,
        custom_save_hooks=None,
        allow_partial_load=False,
    ):
        super().__init__(checkpoints_dir, recoverables, custom_load_hooks, custom_save_hooks, allow_partial_load)
        if if_main_process():
            self._remove_leftovers()

    def add_recoverable(self, name, obj, custom_load_hook=None, custom_save_hook=None, optional_load=False):
        """As in SpeechBrain; an :class:`RNGState` is always optional on loading."""
        super().add_recoverable(
            name, obj, custom_load_hook, custom_save_hook, optional_load=optional_load or isinstance(obj, RNGState)
        )

    def add_recoverables(self, recoverables):
        """As in SpeechBrain, one :meth:`add_recoverable` each."""
        if not isinstance(recoverables, collections.abc.Mapping):
            raise AttributeError(f"Checkpointer needs a mapping (e.g. dict), got {recoverables!r} instead.")
        for name, obj in recoverables.items():
            self.add_recoverable(name, obj)

    def _remove_leftovers(self):
        """Remove the hidden folders of a save or a deletion that a kill interrupted."""
        if not self.checkpoints_dir.is_dir():
            return
        for path in self.checkpoints_dir.iterdir():
            if path.is_dir() and path.name.startswith((TMP_PREFIX, DEL_PREFIX)):
                logger.warning("removing %s, left by an interrupted checkpoint save or deletion", path)
                shutil.rmtree(path, ignore_errors=True)

    def save_checkpoint(self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO):  # noqa: B006 (SpeechBrain signature; not mutated)
        """Saves a checkpoint as SpeechBrain does, into a hidden folder renamed at the end.

        Arguments and return value as in SpeechBrain's ``Checkpointer.save_checkpoint``.
        """
        final = tmp = None
        if if_main_process():
            final = self._new_checkpoint_dirpath() if name is None else self._custom_checkpoint_dirpath(name)
            tmp = final.with_name(TMP_PREFIX + final.name)
            if tmp.exists():
                shutil.rmtree(tmp)
            os.makedirs(tmp)
        final, tmp = ddp_broadcast((final, tmp), src=0)

        for key, obj in self.recoverables.items():
            savepath = tmp / f"{key}{PARAMFILE_EXT}"
            if key in self.custom_save_hooks:
                self.custom_save_hooks[key](obj, savepath)
                continue
            hook = get_default_hook(obj, DEFAULT_SAVE_HOOKS)
            if hook is None:
                raise RuntimeError(
                    f"Don't know how to save {type(obj)}. Register a default hook or add a custom hook for this object."
                )
            hook(obj, savepath)
        ddp_barrier()  # every process has written its files

        checkpoint = None
        if if_main_process():
            saved_meta = self._save_checkpoint_metafile(tmp / METAFNAME, meta, end_of_epoch)
            for path in tmp.iterdir():
                _fsync(path)
            _fsync(tmp)
            if final.exists():  # a custom name saved again: retire the old one first
                self._retire(final)
            os.rename(tmp, final)
            _fsync(self.checkpoints_dir)
            paramfiles = {p.stem: p for p in final.iterdir() if p.suffix == PARAMFILE_EXT}
            checkpoint = Checkpoint(final, saved_meta, paramfiles)
            logger.log(
                verbosity, "Saved an %s checkpoint in %s", "end-of-epoch" if end_of_epoch else "intra-epoch", final
            )
        ddp_barrier()  # the checkpoint is visible to every process
        return checkpoint

    def delete_checkpoints(
        self,
        *,
        num_to_keep=1,
        min_keys=None,
        max_keys=None,
        importance_keys=None,
        ckpt_predicate=None,
        verbosity=logging.INFO,
    ):
        """Deletes the least important checkpoints, as SpeechBrain does, each one atomically.

        Arguments as in SpeechBrain's ``Checkpointer.delete_checkpoints``
        (``importance_keys=None`` means recency).
        """
        if num_to_keep < 0:
            raise ValueError("Number of checkpoints to keep must be positive.")
        if importance_keys is None:
            importance_keys = [ckpt_recency]
        keys = [{"min_key": k} for k in min_keys or []] + [{"max_key": k} for k in max_keys or []]
        keys += [{"importance_key": k} for k in importance_keys]
        candidates, protected = set(), set()
        for key in keys:
            candidates.update(self.find_checkpoints(ckpt_predicate=ckpt_predicate, **key))
            protected.update(
                self.find_checkpoints(max_num_checkpoints=num_to_keep, ckpt_predicate=ckpt_predicate, **key)
            )
        ddp_barrier()
        if if_main_process():
            for ckpt in candidates - protected:
                self._retire(ckpt.path)
                logger.log(verbosity, "Deleted checkpoint in %s", ckpt.path)
        ddp_barrier()

    def _retire(self, path: pathlib.Path):
        """Delete a checkpoint folder: hide it with one rename, then remove it."""
        hidden = path.with_name(DEL_PREFIX + path.name)
        if hidden.exists():
            shutil.rmtree(hidden)
        os.rename(path, hidden)
        shutil.rmtree(hidden)

    @staticmethod
    def _construct_checkpoint_objects(checkpoint_dirs):
        """As in SpeechBrain, but a folder whose meta file is unreadable is skipped with a warning."""
        checkpoints = []
        for ckpt_dir in checkpoint_dirs:
            try:
                with open(ckpt_dir / METAFNAME, encoding="utf-8") as fin:
                    meta = yaml.load(fin, Loader=yaml.SafeLoader)
                if not isinstance(meta, dict) or "unixtime" not in meta or "end-of-epoch" not in meta:
                    raise ValueError("not a mapping with 'unixtime' and 'end-of-epoch'")
            except (OSError, ValueError, yaml.YAMLError) as err:
                logger.warning(
                    "ignoring %s: its %s is unreadable (%s); it is not a complete checkpoint", ckpt_dir, METAFNAME, err
                )
                continue
            paramfiles = {p.stem: p for p in ckpt_dir.iterdir() if p.suffix == PARAMFILE_EXT}
            checkpoints.append(Checkpoint(ckpt_dir, meta, paramfiles))
        return checkpoints

    def load_checkpoint(self, checkpoint):
        """Loads a checkpoint; a missing, truncated or unreadable file is a :class:`CheckpointLoadError`.

        The error names the checkpoint folder and the file, and says how to
        resume from the previous checkpoint instead.
        """
        advice = (
            f"The checkpoint is incomplete or damaged. Move {checkpoint.path} out of "
            f"{self.checkpoints_dir} to resume from the previous checkpoint."
        )
        required = [
            k
            for k in self.recoverables
            if not (self.allow_partial_load or self.optional_recoverables.get(k) or "dataloader" in k)
        ]
        missing = [f"{k}{PARAMFILE_EXT}" for k in required if k not in checkpoint.paramfiles]
        if missing:
            raise CheckpointLoadError(
                f"cannot load checkpoint {checkpoint.path}: it has no {', '.join(missing)}. "
                f"{advice} (If the recipe gained a recoverable since the checkpoint was "
                "written, load it with allow_partial_load.)"
            )
        for _key, path in checkpoint.paramfiles.items():
            problem = _file_problem(path)
            if problem:
                raise CheckpointLoadError(
                    f"cannot load checkpoint {checkpoint.path}: {path.name} is {problem}. {advice}"
                )
        try:
            super().load_checkpoint(checkpoint)
        except CheckpointLoadError:
            raise
        except Exception as err:
            raise CheckpointLoadError(
                f"cannot load checkpoint {checkpoint.path}: {type(err).__name__}: {err}. {advice}"
            ) from err


def _file_problem(path: pathlib.Path):
    """Why a parameter file cannot be loaded (empty, truncated zip), or None."""
    try:
        size = path.stat().st_size
    except OSError as err:
        return f"unreadable ({err})"
    if size == 0:
        return "empty"
    with open(path, "rb") as fin:
        magic = fin.read(4)
    if magic == b"PK\x03\x04":  # torch.save's zip format: the central directory is written last
        try:
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            return f"truncated or corrupt ({err})"
    return None


class RNGState:
    """The global random generators, as a checkpoint recoverable.

    Saves the state of torch (CPU and every CUDA device), numpy and
    ``random``.  Under DDP every process's state is gathered and saved by
    the main process, and each process gets its own back (a different
    number of processes keeps the current states, with a warning).

    Example
    -------
    >>> import tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rng.ckpt"
    >>> rng = RNGState()
    >>> rng.save(path)
    >>> first = torch.rand(3)
    >>> rng.load(path, end_of_epoch=False)
    >>> torch.equal(torch.rand(3), first)
    True
    """

    @staticmethod
    def _state():
        state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def _set_state(state):
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["random"])
        if "cuda" in state and torch.cuda.is_available():
            if len(state["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(state["cuda"])
            else:
                warnings.warn(
                    "the checkpoint's CUDA RNG states are for another number of devices; not restored", stacklevel=2
                )

    @mark_as_saver
    def save(self, path):
        """Saves every process's states (called on every process)."""
        states = [self._state()]
        if is_distributed_initialized():
            states = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, self._state())
        if if_main_process():
            torch.save(states, path)

    @mark_as_loader
    def load(self, path, end_of_epoch):
        """Restores this process's states."""
        del end_of_epoch
        states = torch.load(path, weights_only=False)
        rank, world = 0, 1
        if is_distributed_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if len(states) != world:
            warnings.warn(
                f"{path} holds the RNG states of {len(states)} processes, this run has {world}; "
                "the random generators are not restored",
                stacklevel=2,
            )
            return
        self._set_state(states[rank])


@register_checkpoint_hooks
class EpochCounterWithStopper(epoch_loop.EpochCounterWithStopper):
    """SpeechBrain's ``EpochCounterWithStopper`` whose early-stopping state reaches the checkpoints.

    SpeechBrain (1.1) registers the checkpoint hooks of ``EpochCounter`` but
    not those of its subclass ``EpochCounterWithStopper``, so a checkpoint
    holds the epoch alone, and a resumed run forgets the best epoch, the best
    score and the stop decision.  This class registers them; a checkpoint
    with the epoch alone (written by the stock class) still loads, with a
    warning.

    Example
    -------
    >>> import tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "counter.ckpt"
    >>> counter = EpochCounterWithStopper(limit=10, limit_to_stop=2, limit_warmup=0, direction="min")
    >>> counter.current = 3
    >>> counter.update_metric(0.5)
    >>> counter._save(path)
    >>> fresh = EpochCounterWithStopper(limit=10, limit_to_stop=2, limit_warmup=0, direction="min")
    >>> fresh._recover(path, end_of_epoch=True)
    >>> fresh.current, fresh.best_limit, fresh.best_score
    (3, 3, 0.5)
    """

    @mark_as_saver
    def _save(self, path):
        super()._save(path)

    @mark_as_loader
    def _recover(self, path, end_of_epoch=True):
        with open(path, encoding="utf-8") as fin:
            saved = yaml.safe_load(fin)
        if isinstance(saved, int):  # the stock class's file: the epoch only
            warnings.warn(
                f"{path} holds the epoch but not the early-stopping state; the best epoch and score start afresh",
                stacklevel=2,
            )
            self.current = saved if end_of_epoch else saved - 1
            return
        super()._recover(path, end_of_epoch)


# RNGState.save gathers from every process: run it on all of them, not on the main one only
register_checkpoint_hooks(RNGState, save_on_main_only=False)
