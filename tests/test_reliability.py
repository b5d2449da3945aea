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
    from jaxsink.train.setup import Run
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
        from jaxsink.train.setup import Run
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


# ---------------------------------------------------------------- tokenizer identity
# How a run could meet another tokenizer than the one it was trained with, and the test of each:
#   WORKDIR/tokenizer.json replaced (resume, eval, probe)      test_replaced_tokenizer_json_*
#   tokenizer.json deleted and the corpus changed: retrained     test_retrained_tokenizer_*
#   WORKDIR/config.json edited (data.tokenizer) for eval/probe   test_config_json_edited_*
#   train.checkpoint_dir shared with another run's checkpoints    test_checkpoint_dir_shared_*
#   data.* changed on the command line of a resume               test_changed_data_config_* (refused already
#                                                                by check_workdir_config, naming the key)
# model.vocab_size=320 gives every tokenizer here the same embedding shapes, so that before fingerprints
# were recorded every one of these restored without any error.

BPE_TEXT = "abcdefghij klmnopqrst uvwxyz. " * 400
OTHER_TEXT = "The quick brown fox jumps over the lazy dog; now is the winter of our discontent. " * 100


def _bpe_cfg(corpus, *overrides):
    return _cfg(corpus, "data.tokenizer=bpe", "data.bpe_vocab_size=300", "model.vocab_size=320",
                "train.batch_size=8", "train.steps=4", *overrides)


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """A finished BPE run (steps 2 and 4 checkpointed); tests copy it before changing anything."""
    root = tmp_path_factory.mktemp("bpe_run")
    corpus = root / "text.txt"
    corpus.write_text(BPE_TEXT)
    train(_bpe_cfg(str(corpus)), root / "run", devices=jax.devices()[:1], progress=False)
    return root / "run", str(corpus)


def _copy_run(bpe_run, tmp_path):
    import shutil
    workdir = tmp_path / "run"
    shutil.copytree(bpe_run[0], workdir)
    return workdir


def _other_bpe(path):
    from jaxsink.data import BPETokenizer
    BPETokenizer.train([OTHER_TEXT], 300).save(path)


def _snapshot(folder):
    """Every file under a folder with its size and modification time: 'the checkpoints are untouched'."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _fingerprint(workdir):
    """The fingerprint of the workdir's tokenizer.json (what training recorded, until it is replaced)."""
    from jaxsink.data import BPETokenizer
    return BPETokenizer.load(workdir / "tokenizer.json").fingerprint()


def _cli(capsys, *args):
    from jaxsink.cli import main
    capsys.readouterr()
    rc = main([str(a) for a in args])
    return rc, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def _assert_mismatch(error, *needles):
    msg = str(error)
    assert type(error).__name__ == "TokenizerMismatch" and "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def _assert_cli_mismatch(rc, lines, *needles):
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("jaxsink: error:"), lines
    for needle in ("tokenizer", *needles):
        assert needle in lines[0], (needle, lines)


def test_replaced_tokenizer_json_is_refused_by_resume_eval_and_probe(bpe_run, tmp_path, capsys):
    workdir = _copy_run(bpe_run, tmp_path)
    trained_with = _fingerprint(workdir)["sha256"][:16]
    _other_bpe(workdir / "tokenizer.json")
    now = _fingerprint(workdir)["sha256"][:16]
    before = _snapshot(workdir / "checkpoints")
    with pytest.raises(RuntimeError, match="tokenizer") as e:
        train(_bpe_cfg(bpe_run[1]), workdir, devices=jax.devices()[:1], progress=False)
    _assert_mismatch(e.value, trained_with, now, str(workdir / "tokenizer.json"))
    _assert_cli_mismatch(*_cli(capsys, "eval", "--workdir", workdir), trained_with, now)
    _assert_cli_mismatch(*_cli(capsys, "probe", "--workdir", workdir, "--out", tmp_path / "probe", "--no-progress"),
                         trained_with, now)
    assert _snapshot(workdir / "checkpoints") == before


def test_retrained_tokenizer_from_changed_corpus_is_refused(bpe_run, tmp_path, capsys):
    """tokenizer.json deleted: the same corpus retrains the same BPE (accepted, file restored); a changed
    corpus retrains another one (refused, and no tokenizer.json is written)."""
    import json
    from jaxsink.workdir import load_data
    workdir = _copy_run(bpe_run, tmp_path)
    (workdir / "tokenizer.json").unlink()
    load_data(_bpe_cfg(bpe_run[1]), workdir)
    assert (workdir / "tokenizer.json").exists()
    corpus = tmp_path / "text.txt"
    corpus.write_text(OTHER_TEXT)
    config = json.loads((workdir / "config.json").read_text())
    config["data"]["corpus"] = str(corpus)     # the run's corpus file, edited since (here: a copy of it)
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "tokenizer.json").unlink()
    before = _snapshot(workdir / "checkpoints")
    with pytest.raises(RuntimeError, match="tokenizer") as e:
        train(_bpe_cfg(str(corpus)), workdir, devices=jax.devices()[:1], progress=False)
    _assert_mismatch(e.value, _fingerprint(bpe_run[0])["sha256"][:16], "is missing", str(corpus))
    _assert_cli_mismatch(*_cli(capsys, "eval", "--workdir", workdir), "is missing")
    assert not (workdir / "tokenizer.json").exists()
    assert _snapshot(workdir / "checkpoints") == before


def test_config_json_edited_to_other_tokenizer_is_refused(bpe_run, tmp_path, capsys):
    """data.tokenizer edited in WORKDIR/config.json: refused by the workdir's record, and without the record
    by the checkpoint's own fingerprint."""
    import json
    workdir = _copy_run(bpe_run, tmp_path)
    config = json.loads((workdir / "config.json").read_text())
    config["data"]["tokenizer"] = "byte"
    (workdir / "config.json").write_text(json.dumps(config))
    before = _snapshot(workdir / "checkpoints")
    _assert_cli_mismatch(*_cli(capsys, "eval", "--workdir", workdir), "byte (vocab 257, BOS 256)",
                         "tokenizer_fingerprint.json")
    (workdir / "tokenizer_fingerprint.json").unlink(missing_ok=True)
    _assert_cli_mismatch(*_cli(capsys, "probe", "--workdir", workdir, "--out", tmp_path / "probe", "--no-progress"),
                         "checkpoint step 4", "byte (vocab 257, BOS 256)")
    assert _snapshot(workdir / "checkpoints") == before


def test_checkpoint_dir_shared_with_another_tokenizer_is_refused(bpe_run, tmp_path):
    """A new workdir whose train.checkpoint_dir holds another run's checkpoints (trained with a BPE):
    resuming them with the byte tokenizer is refused before any array is read; nothing is set aside."""
    import shutil
    shared = tmp_path / "shared"
    shutil.copytree(bpe_run[0] / "checkpoints", shared)
    before = _snapshot(shared)
    cfg = _bpe_cfg(bpe_run[1], "data.tokenizer=byte", f"train.checkpoint_dir={shared}")
    with pytest.raises(RuntimeError, match="tokenizer") as e:
        train(cfg, tmp_path / "new", devices=jax.devices()[:1], progress=False)
    _assert_mismatch(e.value, "checkpoint step 4", str(shared), "byte (vocab 257, BOS 256)",
                     _fingerprint(bpe_run[0])["sha256"][:16])
    assert _snapshot(shared) == before


@pytest.mark.parametrize("override", ["data.tokenizer=byte", "data.bpe_vocab_size=400", "data.corpus={other}"])
def test_changed_data_config_on_resume_is_refused(bpe_run, tmp_path, override):
    """Already refused before tokenizer fingerprints (check_workdir_config names the key); kept as a test."""
    from jaxsink.workdir import RunError
    other = tmp_path / "other.txt"
    other.write_text(OTHER_TEXT)
    workdir = _copy_run(bpe_run, tmp_path)
    with pytest.raises(RunError, match=override.split("=")[0]):
        train(_bpe_cfg(bpe_run[1], override.format(other=other)), workdir, devices=jax.devices()[:1],
              progress=False)


def test_workdir_without_fingerprints_warns_once_and_resumes(bpe_run, tmp_path, caplog):
    """A workdir from before fingerprints (no record, checkpoints without one): one warning of each kind,
    however often it is opened; training resumes and records the fingerprint from then on."""
    import json
    from jaxsink.train.checkpoint import CheckpointStore
    from jaxsink.train.setup import Run
    import shutil
    workdir = _copy_run(bpe_run, tmp_path)
    fingerprint = _fingerprint(workdir)
    (workdir / "tokenizer_fingerprint.json").unlink(missing_ok=True)
    shutil.rmtree(workdir / "checkpoints" / "4")     # so that the resumed run saves step 4 again
    for meta in (workdir / "checkpoints").glob("*/extra/metadata"):
        meta.write_text("{}")
    cfg = _bpe_cfg(bpe_run[1])
    with caplog.at_level("WARNING", logger="jaxsink"):
        for _ in range(2):
            run = Run.create(cfg, workdir, devices=jax.devices()[:1])
            assert run.restore_params()[1] == 2
    warnings = [r.getMessage() for r in caplog.records if "no tokenizer fingerprint" in r.getMessage()]
    assert len(warnings) == 2 and any("workdir" in w for w in warnings) and any("checkpoints in" in w for w in warnings)
    summary = train(_bpe_cfg(bpe_run[1]), workdir, devices=jax.devices()[:1], progress=False)
    assert summary["start_step"] == 2 and summary["step"] == 3
    assert json.loads((workdir / "tokenizer_fingerprint.json").read_text())["tokenizer"] == fingerprint
    extra = CheckpointStore(workdir / "checkpoints").read_extra(4)
    assert extra["tokenizer"] == fingerprint


def test_schema_key_added_since_the_workdir_is_not_a_change(bpe_run, tmp_path):
    """A workdir's config.json from before a key joined the schema: the key has its default, so the same
    command resumes; a key whose value really differs is still refused."""
    import json
    from jaxsink.workdir import RunError, check_workdir_config
    workdir = _copy_run(bpe_run, tmp_path)
    config = json.loads((workdir / "config.json").read_text())
    del config["model"]["qkv_bias"]
    (workdir / "config.json").write_text(json.dumps(config))
    check_workdir_config(_bpe_cfg(bpe_run[1]), workdir)
    with pytest.raises(RunError, match="model.qkv_bias"):
        check_workdir_config(_bpe_cfg(bpe_run[1], "model.qkv_bias=True"), workdir)
