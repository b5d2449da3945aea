"""Checkpoints of a training run: a thin wrapper over Orbax's `CheckpointManager` (v0 args API).

All Orbax calls live here, so a later switch to the Orbax v1 API touches this file only.

On disk, `DIRECTORY/<step>/` holds three items: `state/` (the arrays, an OCDBT/tensorstore database),
`config/metadata` and `extra/metadata` (JSON). Orbax writes a step into `<step>.orbax-checkpoint-tmp-*`
and renames it when complete, so a save killed mid-write is never listed as a step.

Restoring the latest step falls back to earlier steps when a checkpoint is unreadable. Unreadable
checkpoints are never deleted or modified; only when a resumed run saves the same step again is the old one
renamed to `<step>.unreadable-<time>` (kept, and no longer listed), since Orbax cannot save over a step.

Steps that the keep-N policy drops are first moved (an atomic rename) into `DIRECTORY/deleted/`, then removed
from there by a background thread during the next save (or by `wait`/`close`): a process killed while
deleting leaves its debris there, never a listed step with half its files (Orbax's in-place delete did: a
SIGKILL left step directories without their metadata). Leftovers are removed when the next store opens the
directory. Between two saves the disk holds at most one dropped step besides the `keep` ones.

A store can be bound to the identity of its run (`identity`, e.g. the tokenizer's fingerprint): it is written
into every checkpoint's `extra` item, and `check_identity(step, extra)` runs on a checkpoint's `extra` before
its arrays are read. A `CheckpointMismatch` it raises is not "unreadable": no fallback, nothing set aside.
"""
from __future__ import annotations

import logging
import os
import pathlib
import shutil
import threading
import time

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

from jaxsink.workdir import CheckpointError, CheckpointMismatch  # noqa: F401  (defined with the workdir's errors)

log = logging.getLogger("jaxsink")


TRASH = "deleted"   # under DIRECTORY: steps dropped by the keep-N policy, removed in the background


class CheckpointStore:
    def __init__(self, directory, *, keep: int = 3, async_save: bool = True, identity: dict | None = None,
                 check_identity=None):
        # epath: local folders and object stores (gs://bucket/run/checkpoints on a TPU pod) alike
        self.directory = epath.Path(directory) if "://" in str(directory) else \
            epath.Path(pathlib.Path(directory).absolute())
        self._unreadable: set[int] = set()
        self._identity = dict(identity or {})
        self._check_identity = check_identity
        self._purger: threading.Thread | None = None
        self._empty_trash()   # what a killed process left there
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.LatestN(keep), create=True,
            enable_async_checkpointing=async_save, todelete_subdir=TRASH, atomicity_options=_atomicity())
        self._manager = ocp.CheckpointManager(self.directory, options=options, handler_registry=_registry())

    def save(self, step: int, state, *, config: dict, extra: dict | None = None, force: bool = False) -> bool:
        """Save (asynchronously unless async_save=False); False when Orbax's policy skips this step."""
        self._set_aside_unreadable(step)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config),
                                  extra=ocp.args.JsonSave({**(extra or {}), **self._identity}))
        saved = self._manager.save(step, args=args, force=force)
        # Orbax's save first waited for the previous one, which moved the step it dropped into TRASH
        self._empty_trash(background=True)
        return saved

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def reached_preemption(self, step: int) -> bool:
        """Whether all processes reached the step at which to save after a preemption notice (multi-process)."""
        return self._manager.reached_preemption(step)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore(self, abstract_state, step: int | None = None) -> tuple[object, dict, dict]:
        """(state, config, extra) of `step`, or of the latest readable step when step is None.

        `abstract_state`: pytree of jax.ShapeDtypeStruct with shardings on the current mesh; the arrays are
        restored in those shardings whatever mesh they were saved from. It may also be a function of the
        stored state's metadata tree returning that pytree (to read a checkpoint saved in another layout).
        """
        def read(s):
            if self._check_identity is not None:
                self._check_identity(s, self.read_extra(s))
            stored = self._manager.item_metadata(s)["state"]
            target = abstract_state(stored) if callable(abstract_state) else abstract_state
            _check_stored_layout(stored, target)
            r = self._manager.restore(s, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), config=ocp.args.JsonRestore(),
                extra=ocp.args.JsonRestore()))
            return r["state"], r["config"], r["extra"]
        return self._first_readable(read, step)

    def read_extra(self, step: int) -> dict:
        """The `extra` item of `step` (JSON), without reading any arrays."""
        return self._manager.restore(step, args=ocp.args.Composite(extra=ocp.args.JsonRestore()))["extra"] or {}

    def wait(self) -> None:
        self._manager.wait_until_finished()
        self._empty_trash()

    def close(self) -> None:
        self._manager.close()
        self._empty_trash()

    def _empty_trash(self, background: bool = False) -> None:
        """Remove the steps the keep-N policy moved to TRASH (local folders, process 0). Only entries that exist
        when it starts are removed: a rename into TRASH is atomic, so none of them is still being moved."""
        trash = pathlib.Path(str(self.directory)) / TRASH
        if "://" in str(self.directory) or jax.process_index() != 0 or not trash.is_dir():
            return
        if self._purger is not None and self._purger.is_alive():
            if background:
                return
            self._purger.join()

        def purge(entries=list(trash.iterdir())):
            for entry in entries:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        if background:
            self._purger = threading.Thread(target=purge, name="jaxsink-checkpoint-trash", daemon=True)
            self._purger.start()
        else:
            purge()

    def _first_readable(self, read, step: int | None):
        """read(step) for the given step, or for the newest step it succeeds on (older ones on failure)."""
        steps = self.all_steps()
        if step is not None and step not in steps:
            raise CheckpointError(f"no checkpoint of step {step} in {self.directory} (steps: {steps})")
        candidates = [step] if step is not None else steps[::-1]
        if not candidates:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        error = None
        for s, earlier in zip(candidates, candidates[1:] + [None]):
            try:
                return read(s)
            except CheckpointMismatch:
                raise
            except Exception as e:  # noqa: BLE001 -- any Orbax/tensorstore/JSON error means "unreadable"
                error = _one_line(e)
                self._unreadable.add(s)
                if earlier is not None:
                    log.warning("checkpoint step %d in %s is unreadable (%s); falling back to step %d",
                                s, self.directory, error, earlier)
        raise CheckpointError(f"no readable checkpoint in {self.directory} (tried steps {candidates}); "
                              f"last error: {error}")

    def _set_aside_unreadable(self, step: int) -> None:
        """Rename the unreadable checkpoints at or after `step` (found by restore) so Orbax can save `step`."""
        stale = sorted(s for s in self._unreadable if s >= step and s in self._manager.all_steps())
        if not stale:
            return
        self._manager.wait_until_finished()
        if jax.process_index() == 0:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for s in stale:
                target = self.directory / f"{s}.unreadable-{stamp}"
                (self.directory / str(s)).rename(target)
                log.warning("unreadable checkpoint step %d kept as %s; saving a new step %d", s, target, s)
        ocp.multihost.sync_global_processes("jaxsink_checkpoint_set_aside")
        self._unreadable -= set(stale)
        self._manager.reload()


ATOMICITY_ENV = "JAXSINK_CHECKPOINT_ATOMICITY"


def _atomicity():
    """Orbax's save protocol: `auto` (gs:// writes in place and commits with commit_success.txt, as object
    stores cannot rename; local folders rename a temporary folder), or forced by $JAXSINK_CHECKPOINT_ATOMICITY
    (`commit_file` on a GCS-FUSE mount, and in the tests, which so run the object-store protocol on a disk)."""
    mode = os.environ.get(ATOMICITY_ENV, "auto")
    modes = [m.value for m in ocp.options.AtomicityMode]
    if mode not in modes:
        raise CheckpointError(f"${ATOMICITY_ENV}={mode!r}: use one of {modes}")
    return ocp.options.AtomicityOptions(mode=ocp.options.AtomicityMode(mode))


def _registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    """Handlers per item, so that partial restores (config only) and item metadata work."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add("state", ocp.args.StandardSave, ocp.StandardCheckpointHandler)
    registry.add("state", ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
    for item in ("config", "extra"):
        registry.add(item, ocp.args.JsonSave, ocp.JsonCheckpointHandler)
        registry.add(item, ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
    return registry


def _check_stored_layout(stored, abstract_state) -> None:
    """Orbax silently casts to the requested dtype; a dtype (or shape) change means the wrong checkpoint."""
    on_disk = {m.name: m for m in jax.tree.leaves(stored)}
    for path, want in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
        name = ".".join(_key_name(k) for k in path)
        have = on_disk.get(name)
        if have is None:
            raise ValueError(f"array {name} is not in the checkpoint")
        if tuple(have.shape) != tuple(want.shape) or have.dtype != want.dtype:
            raise ValueError(f"array {name} is stored as {have.dtype}{list(have.shape)}, "
                             f"expected {want.dtype}{list(want.shape)}")


def _key_name(key) -> str:
    """Orbax's name for one pytree path element (dict key, sequence index or named-tuple field)."""
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _one_line(e: Exception, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or "no message"
    text = text.split(" [tensorstore_spec")[0]  # tensorstore appends a long JSON spec
    return f"{type(e).__name__}: {text[:limit]}"
