"""The training loop: resume-or-init, jitted sharded steps, metrics, evaluation, checkpoints.

Re-running the same command on the same workdir resumes from the latest good checkpoint: the data of step
s is a pure function of (seed, s) and the state is restored exactly, so the metrics of a resumed run equal
an uninterrupted run's.
"""
from __future__ import annotations

import contextlib
import logging
import pathlib
import time
from typing import Callable, NamedTuple

import jax
import numpy as np

from jaxsink.config import to_dict
from jaxsink.model.partitioning import partitioned
from jaxsink.train import metrics as metrics_lib
from jaxsink.train import preemption
from jaxsink.train.checkpoint import CheckpointError
from jaxsink.train.optim import schedule
from jaxsink.train.setup import Run, evaluate
from jaxsink.train.stats import stats_positions
from jaxsink.train.step import make_train_step
from jaxsink.workdir import check_workdir_config, workdir_lock, write_config

log = logging.getLogger("jaxsink")


class NonFiniteLoss(RuntimeError):
    """The loss or gradient norm became NaN/Inf (train.nan_policy=stop)."""


def train(cfg, workdir, *, devices=None, progress: bool = True, stats=None) -> dict:
    """Train (or resume) the run in `workdir`; returns a summary dict (last step, loss, held-out eval).

    `stats`: optional (capture names, stats_fn) for training-time statistics every `stats.every` steps.
    """
    workdir = pathlib.Path(workdir)
    check_workdir_config(cfg, workdir)
    run = Run.create(cfg, workdir, devices)
    if jax.process_count() == 1:
        preemption.stop_if_noticed()   # a notice during start-up (imports, data, tokenizer): stop here
    workdir.mkdir(parents=True, exist_ok=True)
    primary = jax.process_index() == 0   # on a pod only process 0 owns the workdir files and the lock
    with workdir_lock(workdir) if primary else contextlib.nullcontext(), preemption.sigterm_as_notice():
        if primary:
            write_config(cfg, workdir, run.tokenizer)
        return _train_locked(run, progress and primary, stats)


def _train_locked(run: Run, progress: bool, stats) -> dict:
    t = run.cfg.train
    store = run.checkpoints()
    if store.latest_step() is not None:
        state, _, _ = run.restore(store)
    else:
        state = run.init_state()
    start = int(state["step"])
    writer = metrics_lib.MetricsWriter(run.workdir, is_primary=jax.process_index() == 0)
    if jax.process_index() == 0:
        metrics_lib.truncate_after(run.workdir / "metrics.jsonl", start - 1)
    steps = compile_steps(run, stats)
    preempt = preemption.PreemptionWatch(store)
    bar = metrics_lib.Progress(t.steps, initial_step=start, enabled=progress)
    summary = {"start_step": start, "params": run.n_params, "step": start - 1}   # a finished run resumes to here
    tic, tokens_since = time.perf_counter(), 0
    try:
        for step in range(start, t.steps):
            with_stats = stats is not None and run.cfg.stats.every and step % run.cfg.stats.every == 0
            with jax.set_mesh(run.mesh):
                step_fn = steps.with_stats if with_stats else steps.plain
                state, m = step_fn(state, run.train_batch(step))
            tokens_since += run.tokens_per_step
            _check_finite(m, step, t.nan_policy)   # every step: a NaN must stop the run at its step
            if step % t.log_every == 0 or with_stats or step == t.steps - 1:
                m = jax.device_get(m)
                elapsed = time.perf_counter() - tic
                row = {"loss": float(m.pop("loss")), "lr": float(_lr(run, step)),
                       "tokens_per_s": tokens_since / max(elapsed, 1e-9), **_host(m)}
                writer.write(step, row)
                bar.update(step + 1, row["loss"], row["tokens_per_s"])
                summary.update(step=step, loss=row["loss"], tokens_per_s=row["tokens_per_s"])
                tic, tokens_since = time.perf_counter(), 0
            if t.eval_every and (step + 1) % t.eval_every == 0 and step + 1 < t.steps:
                writer.write(step, _prefixed(evaluate(run, state["params"], t.eval_sequences or None)))
            saved = bool(t.checkpoint_every and (step + 1) % t.checkpoint_every == 0)
            if saved:
                _save(store, step + 1, state, run)
            if step + 1 < t.steps and preempt.reached(step + 1):   # every process saves this step, then stops
                if not saved:
                    _save(store, step + 1, state, run, force=True)
                _wait_for_saves(store)
                raise preemption.Preempted(preemption.message(step + 1, store.directory))
        if int(state["step"]) not in store.all_steps():
            _save(store, int(state["step"]), state, run, force=True)
        _wait_for_saves(store)
        final = evaluate(run, state["params"], t.eval_sequences or None)
        # a finished run re-run (killed after logging its final evaluation) must not log it twice
        if start < t.steps or not _logged_eval(run.workdir / "metrics.jsonl", int(state["step"]) - 1):
            writer.write(int(state["step"]) - 1, _prefixed(final))
        summary.update(final)
        return summary
    finally:
        bar.close()
        writer.close()
        store.close()


def _logged_eval(path, step: int) -> bool:
    """Whether metrics.jsonl already holds the evaluation row of `step` (the run was killed after logging it)."""
    if not path.exists():
        return False
    return any(r["step"] == step and any(k.startswith("eval/") for k in r) for r in metrics_lib.read_metrics(path))


def _save(store, step: int, state, run: Run, force: bool = False) -> None:
    """Save the checkpoint of `step`; a failed write (disk full, permissions) becomes one CheckpointError
    line; Orbax's temporary folders keep earlier checkpoints intact."""
    _checkpoint_io(lambda: store.save(step, state, config=to_dict(run.cfg), force=force), f" of step {step}")


def _wait_for_saves(store) -> None:
    """Wait until every pending (asynchronous) save is on disk; a failed write is one CheckpointError line."""
    _checkpoint_io(store.wait, "")


def _checkpoint_io(write, what: str) -> None:
    try:
        write()
    except Exception as e:  # noqa: BLE001 -- Orbax/tensorstore raise many types for I/O failures
        message = " ".join(str(e).split())[:200]
        raise CheckpointError(f"writing the checkpoint{what} failed ({type(e).__name__}: {message}); "
                              "earlier checkpoints are intact") from None


class TrainSteps(NamedTuple):
    plain: Callable                 # the training step
    with_stats: Callable | None     # the same step that also returns training-time statistics


def compile_steps(run: Run, stats) -> TrainSteps:
    """Two jitted variants: the plain step and (if requested) the step that also returns statistics."""
    state_sh = run.state_shardings()
    rep = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec())

    def jit(step_fn):
        step_fn = partitioned(step_fn, run.rules, run.mesh.devices.flat[0].platform)   # activation shardings
        return jax.jit(step_fn, in_shardings=(state_sh, run.batch_sharding()), out_shardings=(state_sh, rep),
                       donate_argnums=0)
    plain = jit(make_train_step(run.graphdef, run.optimizer, run.cfg.train))
    if stats is None:
        return TrainSteps(plain, None)
    capture, stats_fn = stats
    s = run.cfg.stats
    return TrainSteps(plain, jit(make_train_step(run.graphdef, run.optimizer, run.cfg.train, capture=capture,
                                                 stats_fn=stats_fn, stats_rows=s.sequences,
                                                 stats_positions=stats_positions(run.cfg))))


def _check_finite(m, step, policy) -> None:
    if bool(m.pop("finite")):
        return
    if policy == "stop":
        raise NonFiniteLoss(f"non-finite loss or gradient at step {step} (loss={float(m['loss'])}): stopped; "
                            "the update was not applied and the last checkpoint is intact")
    log.warning("non-finite loss or gradient at step %d: update skipped (train.nan_policy=skip)", step)


def _lr(run: Run, step: int) -> float:
    return schedule(run.cfg.train)(step)


def _host(m: dict) -> dict:
    return {k: (float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()) for k, v in m.items()}


def _prefixed(evaluation: dict) -> dict:
    return {f"eval/{k}": v for k, v in evaluation.items()}
