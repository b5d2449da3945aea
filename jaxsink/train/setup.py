"""The JAX set-up of a run, shared by `train`, `eval` and `probe`: mesh, shardings, abstract and initial
state, checkpoints, sharded batches, evaluation, and a trained workdir as a `LoadedModel`.

`Run.create(cfg, workdir)` loads and checks the data and tokenizer (`jaxsink.workdir`), then the model spec,
mesh and shardings, in that order, so every bad input fails with a one-line error before any compute. Every
checkpoint records the tokenizer's fingerprint (`extra`) and restoring one trained with another tokenizer
raises `TokenizerMismatch` before any array is read.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax.sharding import NamedSharding, PartitionSpec as P

from jaxsink import config as config_lib
from jaxsink import data as data_lib
from jaxsink import sharding
from jaxsink.data.tokenizer import describe_fingerprint, same_tokenizer
from jaxsink.model import ModelSpec, abstract_model, build, layout, map_variables, per_block_graphdef, split
from jaxsink.data import generated
from jaxsink.model.loaded import LoadedModel
from jaxsink.model.partitioning import partitioned
from jaxsink.train.checkpoint import CheckpointStore
from jaxsink.train.optim import make_optimizer
from jaxsink.train.step import make_eval_step, position_weights
from jaxsink.workdir import (RunError, TokenizerMismatch, load_data, load_workdir_config,
                             tokenizer_source, warn_once)


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
        return cls.from_spec(cfg, spec, devices, workdir, tokenizer, splits)

    @classmethod
    def from_spec(cls, cfg, spec: ModelSpec, devices, workdir=None, tokenizer=None, splits=None) -> "Run":
        """The JAX set-up of `spec` on `devices`: mesh, rules, abstract parameters, shardings, optimizer (no
        parameter is allocated; `jaxsink compile` uses it without data or tokenizer)."""
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
            warn_once(f"checkpoint:{directory}",
                       f"checkpoints in {directory} record no tokenizer fingerprint (saved before fingerprints "
                       f"were recorded): cannot check that {tokenizer_source(self.cfg, self.workdir, self.tokenizer)} "
                       "is the tokenizer they were trained with")
        elif not same_tokenizer(stored, current):
            raise TokenizerMismatch(
                f"checkpoint step {step} in {directory} was trained with tokenizer {describe_fingerprint(stored)}, "
                f"but this run's tokenizer is {describe_fingerprint(current)} "
                f"({tokenizer_source(self.cfg, self.workdir, self.tokenizer)}); use the run's own workdir and tokenizer, "
                "or a new train.checkpoint_dir")

    def restore(self, store: CheckpointStore, step: int | None = None) -> tuple[dict, dict, dict]:
        """(state, config, extra) of the latest good checkpoint (or `step`) on this run's mesh, in this run's
        parameter layout whichever layout it was saved in (`model.scan_layers` may differ: `layout.py`)."""
        stacked = self.spec.scan_layers

        def target(stored):
            if layout.is_stacked(stored.get("params")) == stacked:
                return self.abstract_state()
            other = Run.from_spec(self.cfg, dataclasses.replace(self.spec, scan_layers=not stacked),
                                  list(self.mesh.devices.flat))
            return other.abstract_state()
        state, config, extra = store.restore(target, step)
        if layout.is_stacked(state["params"]) != stacked:
            with jax.set_mesh(self.mesh):
                state = jax.jit(functools.partial(layout.convert_tree, stacked=stacked),
                                out_shardings=self.state_shardings())(state)
        return state, config, extra

    def restore_params(self, store: CheckpointStore | None = None) -> tuple[dict, int]:
        """Latest good checkpoint's parameters on this run's mesh, and its step."""
        store = store or self.checkpoints()
        if store.latest_step() is None:
            raise RunError(f"no checkpoint in {store.directory}: train first")
        state, _, _ = self.restore(store)
        return state["params"], int(state["step"])

    def batch_sharding(self):
        """[grad_accum, micro_batch, T] batches: micro-batch rows over the `batch` rule's axes."""
        row = sharding.batch_sharding(self.mesh, self.rules).spec[0]
        return NamedSharding(self.mesh, P(None, row, None))

    def train_batch(self, step: int) -> dict:
        t = self.cfg.train
        source = generated.generator(self.cfg.data.corpus)
        make = source.train_batch if source is not None else functools.partial(data_lib.train_batch, self.splits.train)
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


def load_trained(workdir) -> LoadedModel:
    """The latest good checkpoint of a training workdir as a `LoadedModel` (on the first device), in the
    per-block layout that probes read whatever layout it was trained in."""
    run = Run.create(load_workdir_config(workdir), workdir, devices=jax.devices()[:1])
    params, step = run.restore_params()
    spec = dataclasses.replace(run.spec, scan_layers=False)
    return LoadedModel(per_block_graphdef(spec), layout.to_layout(params, False), spec, run.tokenizer, True,
                       f"{workdir} (step {step})")


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
