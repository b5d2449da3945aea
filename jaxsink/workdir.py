"""A workdir's bookkeeping: everything about the folder of a run that is not JAX.

- data loading (corpus -> tokenizer, a BPE trained once and kept in the workdir -> token splits);
- the tokenizer's identity: training records its fingerprint in `WORKDIR/tokenizer_fingerprint.json` (and, via
  `train.setup.Run`, in every checkpoint); `train` (resume), `eval` and `probe` recompute the tokenizer the run
  would use now and refuse a different one (`TokenizerMismatch`, one line naming both fingerprints and the
  file) before any compute. Workdirs from before fingerprints: one warning;
- the config: a workdir belongs to one run (`check_workdir_config`), `config.json` written when training
  starts, read back by `load_workdir_config`;
- one training process per workdir (`workdir_lock`).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pathlib
import socket

from jaxsink import config as config_lib
from jaxsink import data as data_lib
from jaxsink.data import generated
from jaxsink.data.tokenizer import describe_fingerprint, same_tokenizer

# keys that may change between the runs that share a workdir (cadence only, never the science)
RESUMABLE_KEYS = ("train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
                  "train.async_checkpointing", "train.eval_sequences", "stats.every",
                  # how the same computation is laid out: a run resumes onto another mesh or parameter layout
                  "model.scan_layers", "model.remat")
RESUMABLE_PREFIXES = ("mesh.",)
TOKENIZER_RECORD = "tokenizer_fingerprint.json"   # in the workdir, written when training starts

log = logging.getLogger("jaxsink")
_warned: set[str] = set()   # "no fingerprint" warnings already given in this process (once per workdir/folder)


class RunError(RuntimeError):
    """A run cannot start (workdir/config mismatch, missing checkpoint...); one-line message."""


class CheckpointError(RuntimeError):
    """No checkpoint could be read; one-line message."""


class CheckpointMismatch(CheckpointError):
    """A readable checkpoint that belongs to another run (e.g. another tokenizer); one-line message. Never
    a reason to fall back to an earlier step or to set the checkpoint aside."""


class TokenizerMismatch(RunError, CheckpointMismatch):
    """The tokenizer a run would use now is not the one it was trained with; one-line message."""


def load_data(cfg, workdir: pathlib.Path):
    """Corpus -> tokenizer (BPE trained once and kept in the workdir) -> train/held-out token splits.

    The tokenizer is checked against the fingerprint the workdir recorded when it started training (if any)
    before the corpus is encoded; a retrained BPE is saved only when it passes that check."""
    workdir = pathlib.Path(workdir)
    source = generated.generator(cfg.data.corpus)
    if source is not None:                # generated sequences, one per row from BOS (byte ids)
        tokenizer = data_lib.ByteTokenizer()
        check_workdir_tokenizer(cfg, workdir, tokenizer)
        return tokenizer, source.token_splits(cfg.train.seq_len)
    docs = data_lib.load_corpus(cfg.data.corpus)
    if cfg.data.tokenizer == "byte":
        tokenizer, unsaved = data_lib.ByteTokenizer(), False
    else:
        path = workdir / "tokenizer.json"
        unsaved = not path.exists()
        tokenizer = data_lib.BPETokenizer.train(docs, cfg.data.bpe_vocab_size) if unsaved else \
            data_lib.BPETokenizer.load(path)
    check_workdir_tokenizer(cfg, workdir, tokenizer, retrained=unsaved)
    if unsaved:
        workdir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(workdir / "tokenizer.json")
    splits = data_lib.split_and_encode(docs, tokenizer, cfg.data.heldout_fraction)
    if len(splits.train) < cfg.train.seq_len + 1:
        raise data_lib.DataError(f"corpus {cfg.data.corpus!r} has {len(splits.train)} training tokens, "
                                 f"shorter than one sequence of {cfg.train.seq_len}")
    return tokenizer, splits


def check_workdir_tokenizer(cfg, workdir: pathlib.Path, tokenizer, retrained: bool = False) -> None:
    """TokenizerMismatch if the workdir recorded another tokenizer; a warning (once) for a workdir that has
    a config but no record (made before fingerprints were recorded)."""
    record = workdir / TOKENIZER_RECORD
    if not record.exists():
        if (workdir / "config.json").exists():
            warn_once(f"workdir:{workdir.absolute()}",
                       f"workdir {workdir} records no tokenizer fingerprint (made before fingerprints were "
                       f"recorded): cannot check that {tokenizer_source(cfg, workdir, tokenizer, retrained)} is the "
                       "tokenizer it was trained with")
        return
    try:
        recorded = json.loads(record.read_text())["tokenizer"]
        if not isinstance(recorded, dict):
            raise TypeError("not an object")
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise RunError(f"{record} is unreadable ({e.__class__.__name__}); restore it or use a new workdir") \
            from None
    current = tokenizer.fingerprint()
    if not same_tokenizer(recorded, current):
        raise TokenizerMismatch(
            f"workdir {workdir} was trained with tokenizer {describe_fingerprint(recorded)} (recorded in {record}), "
            f"but {tokenizer_source(cfg, workdir, tokenizer, retrained)} is {describe_fingerprint(current)}; restore the "
            "run's tokenizer or use a new --workdir")


def record_tokenizer(workdir: pathlib.Path, tokenizer) -> None:
    """Write the workdir's tokenizer record (once, when training starts; never overwritten)."""
    record = workdir / TOKENIZER_RECORD
    if record.exists():
        return
    tmp = workdir / (TOKENIZER_RECORD + ".tmp")
    tmp.write_text(json.dumps({"tokenizer": tokenizer.fingerprint()}, indent=2, sort_keys=True))
    tmp.replace(record)


def tokenizer_source(cfg, workdir: pathlib.Path, tokenizer, retrained: bool = False) -> str:
    """Where the tokenizer a run uses now comes from, for error messages."""
    if tokenizer.kind == "byte":
        return "the byte tokenizer (data.tokenizer='byte')"
    if retrained:
        return (f"the BPE trained now from data.corpus={cfg.data.corpus!r} ({workdir / 'tokenizer.json'} "
                "is missing)")
    return f"the BPE in {tokenizer.path or workdir / 'tokenizer.json'}"


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


def check_workdir_config(cfg, workdir: pathlib.Path) -> None:
    """A workdir belongs to one run: resuming with a different model/training config is an error."""
    path = workdir / "config.json"
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"{path} is unreadable ({e.__class__.__name__}); move it away or use a new workdir") from None
    try:   # keys added to the schema since the workdir was made take their defaults, as when it is loaded
        saved = config_lib.to_dict(config_lib.from_dict(saved))
    except (config_lib.ConfigError, AttributeError, TypeError, ValueError):
        pass   # a key the schema no longer has: the diff below names it
    current = config_lib.to_dict(cfg)
    for key, old, new in _diff(saved, current):
        if key not in RESUMABLE_KEYS and not key.startswith(RESUMABLE_PREFIXES):
            raise RunError(f"workdir {workdir} holds a run with {key}={old!r}, not {new!r}; use a new --workdir")


def _diff(a, b, prefix=""):
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        name = f"{prefix}{key}"
        if isinstance(va, dict) and isinstance(vb, dict):
            yield from _diff(va, vb, name + ".")
        elif va != vb:
            yield name, va, vb


def write_config(cfg, workdir: pathlib.Path, tokenizer) -> None:
    """When training starts: the workdir's config.json, and its tokenizer record if it has none yet."""
    workdir.mkdir(parents=True, exist_ok=True)
    record_tokenizer(workdir, tokenizer)
    tmp = workdir / "config.json.tmp"
    tmp.write_text(json.dumps(config_lib.to_dict(cfg), indent=2, sort_keys=True))
    tmp.replace(workdir / "config.json")


def load_workdir_config(workdir) -> object:
    path = pathlib.Path(workdir) / "config.json"
    if not path.exists():
        raise RunError(f"{workdir} is not a jaxsink workdir (no config.json)")
    try:
        return config_lib.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise RunError(f"{path} is not valid JSON ({e.msg})") from None


# ---------------------------------------------------------------- one process per workdir

class WorkdirLocked(RuntimeError):
    """Another live process holds the workdir."""


@contextlib.contextmanager
def workdir_lock(workdir):
    """flock(WORKDIR/.lock): released on exit and by the kernel when the holder dies (no stale locks)."""
    path = pathlib.Path(workdir) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise WorkdirLocked(f"workdir {workdir} is in use by {holder}; wait for it or use another --workdir") \
                from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)
