"""Everything a run needs before the first step, shared by `train`, `eval` and `probe`.

`Run.create(cfg, workdir)` loads and checks the data, tokenizer, model spec, mesh and shardings, in that
order, so every bad input fails with a one-line error before any compute.

Tokenizer identity: training records the tokenizer's fingerprint in `WORKDIR/tokenizer_fingerprint.json` and
in every checkpoint (`extra`); `train` (resume), `eval` and `probe` recompute the tokenizer the run would use
now and refuse a different one (`TokenizerMismatch`, one line naming both fingerprints and the file) before
any compute, without touching the checkpoints. Workdirs and checkpoints from before fingerprints: one warning.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsink import config as config_lib
from jaxsink import data as data_lib
from jaxsink import sharding
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxsink.model import ModelSpec, abstract_model, build, map_variables, split
from jaxsink.data import bb_guo
from jaxsink.model.loaded import LoadedModel
from jaxsink.model.partitioning import partitioned
from jaxsink.data.tokenizer import describe_fingerprint, same_tokenizer
from jaxsink.train.checkpoint import CheckpointMismatch, CheckpointStore
from jaxsink.train.optim import make_optimizer
from jaxsink.train.step import make_eval_step, position_weights

# keys that may change between the runs that share a workdir (cadence only, never the science)
RESUMABLE_KEYS = ("train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
                  "train.async_checkpointing", "train.eval_sequences", "stats.every")


TOKENIZER_RECORD = "tokenizer_fingerprint.json"   # in the workdir, written when training starts

log = logging.getLogger("jaxsink")
_warned: set[str] = set()   # "no fingerprint" warnings already given in this process (once per workdir/folder)


class RunError(RuntimeError):
    """A run cannot start (workdir/config mismatch, missing checkpoint...); one-line message."""


class TokenizerMismatch(RunError, CheckpointMismatch):
    """The tokenizer a run would use now is not the one it was trained with; one-line message."""


@dataclasses.dataclass
class Run:
    cfg: object
    workdir: pathlib.Path
    tokenizer: object
    splits: data_lib.TokenSplits
    spec: ModelSpec
    mesh: jax.sharding.Mesh
    rules: dict
    graphdef: object
    param_shardings: dict
    abstract_params: dict
    optimizer: optax.GradientTransformation

    @classmethod
    def create(cls, cfg, workdir, devices=None) -> "Run":
        devices = list(jax.devices() if devices is None else devices)
        config_lib.validate(cfg, len(devices))
        workdir = pathlib.Path(workdir)
        tokenizer, splits = load_data(cfg, workdir)
        spec = ModelSpec.from_config(cfg.model, tokenizer.vocab_size)
        if spec.vocab_size < tokenizer.vocab_size:
            raise config_lib.ConfigError(
                f"model.vocab_size: {spec.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size}")
        mesh = sharding.make_mesh(cfg.mesh, devices)
        rules = sharding.rules_from_config(cfg.mesh)
        graphdef, abstract_state = abstract_model(spec)
        shardings = sharding.param_shardings(abstract_state, rules, mesh)
        abstract = map_variables(abstract_state, lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype))
        return cls(cfg, workdir, tokenizer, splits, spec, mesh, rules, graphdef, shardings, abstract,
                   make_optimizer(cfg.train, abstract))

    # ------------------------------------------------------------ state
    def state_shardings(self) -> dict:
        """Shardings of {"params", "opt_state", "step"}: optimizer moments follow their parameter."""
        rep = sharding.replicated(self.mesh)
        opt_abstract = jax.eval_shape(self.optimizer.init, self.abstract_params)
        opt = optax.tree_map_params(self.optimizer, lambda _, s: s, opt_abstract, self.param_shardings,
                                    transform_non_params=lambda _: rep)
        return {"params": self.param_shardings, "opt_state": opt, "step": rep}

    def abstract_state(self) -> dict:
        shardings = self.state_shardings()
        shapes = {"params": self.abstract_params,
                  "opt_state": jax.eval_shape(self.optimizer.init, self.abstract_params),
                  "step": jax.ShapeDtypeStruct((), jnp.int32)}
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)

    def init_state(self) -> dict:
        """Fresh parameters (seed train.seed) created directly in their shardings."""
        graph_seed = self.cfg.train.seed

        def init():
            params = split(build(self.spec, graph_seed))[1]
            return {"params": params, "opt_state": self.optimizer.init(params), "step": jnp.int32(0)}
        with jax.set_mesh(self.mesh):
            return jax.jit(init, out_shardings=self.state_shardings())()

    def checkpoints(self) -> CheckpointStore:
        """The run's checkpoints: each one saved records the tokenizer's fingerprint, and restoring one
        trained with another tokenizer raises TokenizerMismatch before any array is read."""
        t = self.cfg.train
        return CheckpointStore(t.checkpoint_dir or self.workdir / "checkpoints", keep=t.keep_checkpoints,
                               async_save=t.async_checkpointing,
                               identity={"tokenizer": self.tokenizer.fingerprint()},
                               check_identity=self._check_checkpoint_tokenizer)

    def _check_checkpoint_tokenizer(self, step: int, extra: dict) -> None:
        stored, current = extra.get("tokenizer"), self.tokenizer.fingerprint()
        directory = self.cfg.train.checkpoint_dir or self.workdir / "checkpoints"
        if stored is None:
            _warn_once(f"checkpoint:{directory}",
                       f"checkpoints in {directory} record no tokenizer fingerprint (saved before fingerprints "
                       f"were recorded): cannot check that {_source(self.cfg, self.workdir, self.tokenizer)} "
                       "is the tokenizer they were trained with")
        elif not same_tokenizer(stored, current):
            raise TokenizerMismatch(
                f"checkpoint step {step} in {directory} was trained with tokenizer {describe_fingerprint(stored)}, "
                f"but this run's tokenizer is {describe_fingerprint(current)} "
                f"({_source(self.cfg, self.workdir, self.tokenizer)}); use the run's own workdir and tokenizer, "
                "or a new train.checkpoint_dir")

    def restore_params(self, store: CheckpointStore | None = None) -> tuple[dict, int]:
        """Latest good checkpoint's parameters on this run's mesh, and its step."""
        store = store or self.checkpoints()
        if store.latest_step() is None:
            raise RunError(f"no checkpoint in {store.directory}: train first")
        state, _, _ = store.restore(self.abstract_state())
        return state["params"], int(state["step"])

    def batch_sharding(self):
        """[grad_accum, micro_batch, T] batches: micro-batch rows over the `batch` rule's axes."""
        row = sharding.batch_sharding(self.mesh, self.rules).spec[0]
        return NamedSharding(self.mesh, P(None, row, None))

    def train_batch(self, step: int) -> dict:
        t = self.cfg.train
        make = bb_guo.train_batch if self.cfg.data.corpus == bb_guo.NAME else \
            functools.partial(data_lib.train_batch, self.splits.train)
        inputs, targets = make(seed=t.seed, step=step, batch_size=t.batch_size, seq_len=t.seq_len,
                               bos_id=self.tokenizer.bos_id)
        shape = (t.grad_accum, t.batch_size // t.grad_accum, t.seq_len)
        sh = self.batch_sharding()
        return {"inputs": global_array(inputs.reshape(shape), sh), "targets": global_array(targets.reshape(shape), sh)}

    @property
    def n_params(self) -> int:
        return int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.abstract_params)))

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.train.batch_size * self.cfg.train.seq_len


def global_array(x: np.ndarray, sharding) -> jax.Array:
    """A global array from host data every process holds in full (each process fills its own shards),
    so the same code runs on one CPU and on a multi-host pod."""
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


# ---------------------------------------------------------------- data and workdir

def load_data(cfg, workdir: pathlib.Path):
    """Corpus -> tokenizer (BPE trained once and kept in the workdir) -> train/held-out token splits.

    The tokenizer is checked against the fingerprint the workdir recorded when it started training (if any)
    before the corpus is encoded; a retrained BPE is saved only when it passes that check."""
    workdir = pathlib.Path(workdir)
    if cfg.data.corpus == bb_guo.NAME:    # generated sequences, one per row from BOS (byte ids)
        tokenizer = data_lib.ByteTokenizer()
        check_workdir_tokenizer(cfg, workdir, tokenizer)
        return tokenizer, bb_guo.token_splits(cfg.train.seq_len)
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
            _warn_once(f"workdir:{workdir.absolute()}",
                       f"workdir {workdir} records no tokenizer fingerprint (made before fingerprints were "
                       f"recorded): cannot check that {_source(cfg, workdir, tokenizer, retrained)} is the "
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
            f"but {_source(cfg, workdir, tokenizer, retrained)} is {describe_fingerprint(current)}; restore the "
            "run's tokenizer or use a new --workdir")


def record_tokenizer(workdir: pathlib.Path, tokenizer) -> None:
    """Write the workdir's tokenizer record (once, when training starts; never overwritten)."""
    record = workdir / TOKENIZER_RECORD
    if record.exists():
        return
    tmp = workdir / (TOKENIZER_RECORD + ".tmp")
    tmp.write_text(json.dumps({"tokenizer": tokenizer.fingerprint()}, indent=2, sort_keys=True))
    tmp.replace(record)


def _source(cfg, workdir: pathlib.Path, tokenizer, retrained: bool = False) -> str:
    """Where the tokenizer a run uses now comes from, for error messages."""
    if tokenizer.kind == "byte":
        return "the byte tokenizer (data.tokenizer='byte')"
    if retrained:
        return (f"the BPE trained now from data.corpus={cfg.data.corpus!r} ({workdir / 'tokenizer.json'} "
                "is missing)")
    return f"the BPE in {tokenizer.path or workdir / 'tokenizer.json'}"


def _warn_once(key: str, message: str) -> None:
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
        if key not in RESUMABLE_KEYS:
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


def load_trained(workdir) -> LoadedModel:
    """The latest good checkpoint of a training workdir as a `LoadedModel` (on the first device)."""
    run = Run.create(load_workdir_config(workdir), workdir, devices=jax.devices()[:1])
    params, step = run.restore_params()
    return LoadedModel(run.graphdef, params, run.spec, run.tokenizer, True, f"{workdir} (step {step})")


def bits_per_byte(nll_sum: float, tokens: float, splits: data_lib.TokenSplits) -> float:
    """Nats over `tokens` held-out tokens -> bits per UTF-8 byte (bytes per token from the whole split)."""
    bytes_covered = tokens * splits.heldout_bytes / max(len(splits.heldout), 1)
    return float(nll_sum / math.log(2) / bytes_covered)


def evaluate(run: Run, params, max_sequences: int | None = None) -> dict:
    """Held-out loss, perplexity and bits per byte over consecutive non-overlapping chunks."""
    t = run.cfg.train
    micro = t.batch_size // t.grad_accum
    eval_step = make_eval_step(run.graphdef, position_weights(t.seq_len, t.loss_start, t.loss_end))
    step = jax.jit(partitioned(eval_step, run.rules, run.mesh.devices.flat[0].platform))
    nll, count, seqs = 0.0, 0.0, 0
    row = sharding.batch_sharding(run.mesh, run.rules)
    for inputs, targets, mask in data_lib.eval_batches(run.splits.heldout, seq_len=t.seq_len, batch_size=micro,
                                                       bos_id=run.tokenizer.bos_id, max_sequences=max_sequences):
        with jax.set_mesh(run.mesh):
            s, n = step(params, global_array(inputs, row), global_array(targets, row),
                        global_array(np.asarray(mask), sharding.replicated(run.mesh)))
        nll, count, seqs = nll + float(s), count + float(n), seqs + int(np.sum(mask))
    loss = nll / count
    return {"heldout_loss": loss, "perplexity": float(math.exp(min(loss, 50.0))),
            "bits_per_byte": bits_per_byte(nll, count, run.splits), "heldout_tokens": int(count),
            "sequences": seqs,
            "unigram_bits_per_byte": data_lib.unigram_bits_per_byte(run.splits, run.tokenizer.vocab_size)}
