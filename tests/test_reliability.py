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

keys = {   # mostly valid values, plus one or two invalid ones per key, so both outcomes are common
    "model.norm_placement": st.sampled_from(NORM_PLACEMENTS + ("middle",)),
    "model.norm_type": st.sampled_from(NORM_TYPES + ("batchnorm",)),
    "model.ffn": st.sampled_from(FFNS),
    "model.attention": st.sampled_from(ATTENTIONS),
    "model.gate": st.sampled_from(GATES),
    "model.position": st.sampled_from(POSITIONS),
    "model.qk_norm": st.booleans(),
    "model.n_layers": st.sampled_from([1, 2, 2, 3, 0]),
    "model.d_model": st.sampled_from([8, 12, 16, 16, 0]),
    "model.n_heads": st.sampled_from([1, 2, 4, 4, 4, 0]),
    "model.n_kv_heads": st.sampled_from([0, 0, 1, 2, 3, -1]),
    "model.d_head": st.sampled_from([2, 4, 6, 8, 8, 5, 0]),
    "model.d_ff": st.sampled_from([8, 24, 24, -4]),
    "model.sliding_window": st.sampled_from([0, 0, 2, 5, -1]),
    "model.max_seq_len": st.sampled_from([8, 16, 16, 4]),
    "model.tie_embeddings": st.booleans(),
    "train.seq_len": st.sampled_from([8, 8, 16, 0]),
    "train.batch_size": st.sampled_from([2, 4, 4, 3, 0]),
    "train.grad_accum": st.sampled_from([1, 1, 2, 0]),
    "train.loss_start": st.sampled_from([0, 0, 0, 2, 10]),
    "train.loss_end": st.sampled_from([0, 0, 0, 6, 16, -1]),
    "train.lr": st.sampled_from([1e-3, 1e-3, 0.0, -1.0]),
    "train.b2": st.sampled_from([0.95, 0.95, 1.0, 1.5]),
}


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
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
    assert TRIED["valid"] >= 10 and TRIED["rejected"] >= 10


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
    """The workdir's 4 MB tmpfs is filled up as soon as the step-2 checkpoint exists: a clear one-line
    error, the step-2 checkpoint intact, and the same command resumes from it once space is back."""
    import os
    import threading
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        workdir = mnt / "run"
        filler = mnt / "filler"
        cfg = _cfg(corpus, "train.async_checkpointing=false", "train.keep_checkpoints=5")
        stop = threading.Event()

        def fill_after_first_checkpoint():
            while not stop.is_set() and not (workdir / "checkpoints" / "2").exists():
                stop.wait(0.002)
            try:
                with open(filler, "wb") as f:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
            except OSError:
                pass
        thread = threading.Thread(target=fill_after_first_checkpoint, daemon=True)
        thread.start()
        from jaxsink.train.checkpoint import CheckpointError
        from jaxsink.train.run import Run
        with pytest.raises((CheckpointError, OSError)) as e:
            train(cfg, workdir, devices=jax.devices()[:1], progress=False)
        stop.set()
        thread.join()
        assert "\n" not in str(e.value)
        run = Run.create(cfg, workdir, devices=jax.devices()[:1])
        assert 2 in run.checkpoints().all_steps()
        params, step = run.restore_params()
        assert step >= 2 and all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
        os.remove(filler)
        summary = train(cfg, workdir, devices=jax.devices()[:1], progress=False)
        assert summary["start_step"] == step and summary["step"] == 5
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
