"""Reliability: random configs train or are rejected up front; NaN stops at its step; CLI errors are one line."""
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from jaxsink.config import (ATTENTIONS, FFNS, GATES, NORM_PLACEMENTS, NORM_TYPES, POSITIONS, ConfigError,
                            apply_overrides, base_config, validate)
from jaxsink.model import ModelSpec, build, split
from jaxsink.train.loop import NonFiniteLoss, train
from jaxsink.train.optim import make_optimizer
from jaxsink.train.step import make_train_step

TRIED = {"valid": 0, "rejected": 0}

keys = {
    "model.norm_placement": st.sampled_from(NORM_PLACEMENTS + ("middle",)),
    "model.norm_type": st.sampled_from(NORM_TYPES + ("batchnorm",)),
    "model.ffn": st.sampled_from(FFNS),
    "model.attention": st.sampled_from(ATTENTIONS),
    "model.gate": st.sampled_from(GATES),
    "model.position": st.sampled_from(POSITIONS),
    "model.qk_norm": st.booleans(),
    "model.n_layers": st.integers(-1, 3),
    "model.d_model": st.sampled_from([0, 8, 12, 16]),
    "model.n_heads": st.integers(0, 4),
    "model.n_kv_heads": st.integers(-1, 4),
    "model.d_head": st.integers(0, 9),
    "model.d_ff": st.sampled_from([-4, 8, 24]),
    "model.sliding_window": st.integers(-1, 5),
    "model.max_seq_len": st.sampled_from([4, 8, 16]),
    "model.tie_embeddings": st.booleans(),
    "train.seq_len": st.sampled_from([0, 8, 16]),
    "train.batch_size": st.integers(0, 4),
    "train.grad_accum": st.integers(0, 3),
    "train.loss_start": st.integers(0, 10),
    "train.loss_end": st.integers(-1, 16),
    "train.lr": st.sampled_from([-1.0, 0.0, 1e-3]),
    "train.b2": st.sampled_from([0.95, 1.0, 1.5]),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=keys))
def test_random_configs_train_one_step_or_are_rejected_up_front(overrides):
    cfg = base_config()
    apply_overrides(cfg, [f"model.vocab_size=24", "train.warmup_steps=1"])
    try:
        for key, value in overrides.items():
            apply_overrides(cfg, [f"{key}={value}"])
        validate(cfg, device_count=1)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg and msg.split(":")[0].replace("model.", "").replace("train.", "") != ""
        assert any(k in msg for k in list(overrides) + ["mesh", "model.", "train."]), msg
        TRIED["rejected"] += 1
        return
    TRIED["valid"] += 1
    spec = ModelSpec.from_config(cfg.model)
    t = cfg.train
    graphdef, params = split(build(spec))
    opt = make_optimizer(t, params)
    step = make_train_step(graphdef, opt, t)
    micro = t.batch_size // t.grad_accum
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 24, size=(t.grad_accum, micro, t.seq_len)))
    _, m = jax.jit(step)({"params": params, "opt_state": opt.init(params), "step": jnp.int32(0)},
                         {"inputs": tokens, "targets": tokens})
    assert math.isfinite(float(m["loss"]))


def test_fuzzing_tried_both_kinds():
    """Runs after the fuzz test (file order): the sample must contain valid and rejected configs."""
    print(f"config fuzzing: {TRIED['valid']} trained one step, {TRIED['rejected']} rejected before compute")
    assert TRIED["valid"] >= 5 and TRIED["rejected"] >= 5


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("abcdefghij klmnopqrst uvwxyz. " * 400)
    return str(path)


def _cfg(corpus, *overrides):
    cfg = base_config()
    apply_overrides(cfg, [f"data.corpus={corpus}", "model.d_model=16", "model.d_head=4", "model.d_ff=32",
                          "train.seq_len=16", "train.batch_size=4", "train.steps=6", "train.log_every=1",
                          "train.checkpoint_every=2", "train.eval_sequences=4", "train.warmup_steps=0",
                          "train.grad_clip=0.0", *overrides])
    return cfg


def test_nan_stops_at_its_step_and_keeps_the_last_checkpoint(corpus, tmp_path):
    from jaxsink.train.run import Run
    cfg = _cfg(corpus, "train.lr=1e30")
    with pytest.raises(NonFiniteLoss, match=r"at step \d+") as e:
        train(cfg, tmp_path, devices=jax.devices()[:1], progress=False)
    assert "\n" not in str(e.value)
    run = Run.create(cfg, tmp_path, devices=jax.devices()[:1])
    steps = run.checkpoints().all_steps()
    bad = int(str(e.value).split("at step ")[1].split()[0].rstrip(":"))
    assert all(s <= bad for s in steps)
    if steps:
        params, step = run.restore_params()
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_nan_policy_skip_finishes(corpus, tmp_path):
    summary = train(_cfg(corpus, "train.lr=1e30", "train.nan_policy=skip"), tmp_path,
                    devices=jax.devices()[:1], progress=False)
    assert summary["step"] == 5


@pytest.mark.parametrize("args, needle", [
    (["train", "--config", "tiny", "--workdir", "{tmp}", "--config.model.norm_placment=pre"], "norm_placment"),
    (["train", "--config", "tiny", "--workdir", "{tmp}", "--config.data.corpus=/no/such/file.txt"], "/no/such"),
    (["train", "--config", "tiny", "--workdir", "{tmp}", "--config.model.d_head=7"], "model.d_head"),
    (["train", "--config", "{tmp}/missing.py", "--workdir", "{tmp}"], "does not exist"),
    (["eval", "--workdir", "{tmp}/nothing"], "not a jaxsink workdir"),
])
def test_cli_errors_are_one_line(args, needle, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = subprocess.run([sys.executable, "-m", "jaxsink.cli", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("jaxsink: error:") and needle in lines[0], r.stderr


def test_disk_full_during_checkpoint_keeps_the_previous_and_resumes(corpus, tmp_path):
    """A 3 MB tmpfs fills up after the first checkpoint: clear error, step-2 checkpoint intact, and the
    same command resumes from it once space is back."""
    import os
    import shutil
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        workdir = mnt / "run"
        cfg = _cfg(corpus, "train.async_checkpointing=false", "train.keep_checkpoints=5")
        from jaxsink.train.run import Run
        run = Run.create(cfg, workdir, devices=jax.devices()[:1])
        # fill the disk right after the first checkpoint by training 2 steps in a first call
        train(_cfg(corpus, "train.async_checkpointing=false", "train.keep_checkpoints=5", "train.steps=2"),
              mnt / "probe_size", devices=jax.devices()[:1], progress=False)
        size = sum(f.stat().st_size for f in (mnt / "probe_size").rglob("*") if f.is_file())
        shutil.rmtree(mnt / "probe_size")
        free = shutil.disk_usage(mnt).free
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * max(free - int(1.5 * size), 0))   # room for one checkpoint, not two
        from jaxsink.train.checkpoint import CheckpointError
        with pytest.raises((CheckpointError, OSError)) as e:
            train(cfg, workdir, devices=jax.devices()[:1], progress=False)
        assert "\n" not in str(e.value)
        steps = run.checkpoints().all_steps()
        assert steps, "the first checkpoint should have been written"
        params, step = run.restore_params()
        assert step == max(steps)
        os.remove(filler)
        summary = train(cfg, workdir, devices=jax.devices()[:1], progress=False)
        assert summary["start_step"] == max(steps) and summary["step"] == 5
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
