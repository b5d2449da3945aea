"""Training: sharded == single device, grad accumulation == full batch, kill-and-resume == uninterrupted."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxsink.config import apply_overrides, load_config
from jaxsink.train.loop import train
from jaxsink.train.metrics import read_metrics
from jaxsink.train.setup import Run, RunError, evaluate

TEXT = ("The quick brown fox jumps over the lazy dog. " * 3 + "Now is the winter of our discontent.\n") * 300


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(TEXT)
    return str(path)


def tiny(corpus, *overrides):
    cfg = load_config("tiny")
    apply_overrides(cfg, [f"data.corpus={corpus}", "model.d_model=32", "model.d_head=8", "model.d_ff=64",
                          "model.n_heads=4", "train.seq_len=32", "train.batch_size=8", "train.steps=12",
                          "train.log_every=1", "train.checkpoint_every=4", "train.eval_sequences=16",
                          "train.warmup_steps=2", *overrides])
    return cfg


def losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl")) if "loss" in r}


def test_eight_device_mesh_matches_one_device(corpus, tmp_path):
    one = train(tiny(corpus), tmp_path / "one", devices=jax.devices()[:1], progress=False)
    mesh = tiny(corpus, "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")
    eight = train(mesh, tmp_path / "eight", devices=jax.devices()[:8], progress=False)
    a, b = losses(tmp_path / "one"), losses(tmp_path / "eight")
    assert sorted(a) == list(range(12)) and sorted(b) == list(range(12))
    np.testing.assert_allclose([a[s] for s in range(12)], [b[s] for s in range(12)], rtol=2e-5)
    assert a[11] < a[0] - 0.3, "the model should learn something in 12 steps"
    assert abs(one["heldout_loss"] - eight["heldout_loss"]) < 1e-4


def test_restore_onto_a_different_mesh(corpus, tmp_path):
    cfg = tiny(corpus, "mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2")
    summary = train(cfg, tmp_path, devices=jax.devices()[:8], progress=False)
    run = Run.create(tiny(corpus), tmp_path, devices=jax.devices()[:1])
    params, step = run.restore_params()
    assert step == 12
    assert next(iter(jax.tree.leaves(params))).sharding.num_devices == 1
    again = evaluate(run, params, 16)
    assert abs(again["heldout_loss"] - summary["heldout_loss"]) < 1e-4


def test_grad_accumulation_equals_full_batch(corpus, tmp_path):
    train(tiny(corpus, "train.steps=4"), tmp_path / "a", devices=jax.devices()[:1], progress=False)
    train(tiny(corpus, "train.steps=4", "train.grad_accum=4"), tmp_path / "b", devices=jax.devices()[:1],
          progress=False)
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    np.testing.assert_allclose([a[s] for s in range(4)], [b[s] for s in range(4)], rtol=1e-5)


def test_rerun_resumes_and_refuses_other_config(corpus, tmp_path):
    cfg = tiny(corpus, "train.steps=6", "train.checkpoint_every=3")
    train(cfg, tmp_path, devices=jax.devices()[:1], progress=False)
    again = train(cfg, tmp_path, devices=jax.devices()[:1], progress=False)
    assert again["start_step"] == 6 and again["step"] == 5 and "heldout_loss" in again
    with pytest.raises(RunError, match="model.norm_placement"):
        train(tiny(corpus, "train.steps=6", "train.checkpoint_every=3", "model.norm_placement=sandwich"),
              tmp_path, devices=jax.devices()[:1], progress=False)


def _kill_when(cmd, env, workdir, ready):
    """Start the training command and SIGKILL it as soon as ready() holds (or after 120 s)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_kill_and_resume_equals_uninterrupted(corpus, tmp_path):
    """SIGKILL a real training process in the middle of an async checkpoint write, then again between
    checkpoints; re-running the same command each time must end with exactly the uninterrupted metrics."""
    overrides = [f"--config.data.corpus={corpus}", "--config.model.d_model=32", "--config.model.d_head=8",
                 "--config.model.d_ff=64", "--config.train.seq_len=32", "--config.train.batch_size=8",
                 "--config.train.steps=40", "--config.train.log_every=1", "--config.train.checkpoint_every=8",
                 "--config.train.eval_sequences=16", "--config.train.warmup_steps=2"]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "jaxsink.cli", "train", "--config", "tiny", "--workdir", str(killed),
           "--no-progress", *overrides]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1"}

    def steps_done():
        return max(losses(killed), default=-1) if (killed / "metrics.jsonl").exists() else -1

    def writing_checkpoint():   # Orbax writes into <step>.orbax-checkpoint-tmp-* and renames when complete
        return any("tmp" in p.name for p in (killed / "checkpoints").glob("*")) if (killed / "checkpoints").exists() \
            else False
    _kill_when(cmd, env, killed, lambda: writing_checkpoint() or steps_done() >= 19)
    first = steps_done()
    _kill_when(cmd, env, killed, lambda: steps_done() >= max(first, 0) + 11)
    assert steps_done() < 39, "the run finished before it could be killed"
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    whole = tmp_path / "whole"
    cfg = load_config("tiny", [o[len("--config."):] for o in overrides])
    train(cfg, whole, devices=jax.devices()[:1], progress=False)
    a, b = losses(killed), losses(whole)
    assert sorted(a) == sorted(b) == list(range(40))
    np.testing.assert_allclose([a[s] for s in range(40)], [b[s] for s in range(40)], rtol=1e-6)
    rows = [r for r in read_metrics(killed / "metrics.jsonl") if "loss" in r]
    assert len(rows) == 40, "a resumed run's metrics file must not repeat steps"
    assert json.loads((killed / "config.json").read_text())["train"]["steps"] == 40
