"""jax.distributed on localhost: 2 processes x 4 CPU devices train, checkpoint, restore; process 0 writes metrics."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from jaxsink.config import load_config
from jaxsink.train.loop import train
from jaxsink.train.metrics import read_metrics
from jaxsink.train.setup import Run, evaluate

OVERRIDES = ["model.d_model=32", "model.d_head=8", "model.d_ff=64", "train.seq_len=32", "train.batch_size=8",
             "train.steps=6", "train.log_every=1", "train.checkpoint_every=3", "train.eval_sequences=16",
             "train.warmup_steps=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(command, corpus, workdir):
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "4"}
    extra = ["--config", "tiny", "--no-progress", *[f"--config.{o}" for o in OVERRIDES],
             f"--config.data.corpus={corpus}"] if command == "train" else ["--sequences", "16"]
    procs = [subprocess.Popen([sys.executable, "-m", "jaxsink.cli", "--coordinator", f"localhost:{port}",
                               "--num-processes", "2", "--process-id", str(i), command, "--workdir", str(workdir),
                               *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(out[out.index("{"):]) for out, _ in outs]


def test_two_processes_train_checkpoint_and_restore(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("Now is the winter of our discontent made glorious summer. " * 500)
    workdir = tmp_path / "mp"
    trained = _launch("train", corpus, workdir)
    assert trained[0]["heldout_loss"] == trained[1]["heldout_loss"]
    rows = read_metrics(workdir / "metrics.jsonl")
    assert [r["step"] for r in rows if "loss" in r] == list(range(6)), "process 0 only, each step once"
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6]

    evaluated = _launch("eval", corpus, workdir)            # restore across the two processes
    assert abs(evaluated[0]["heldout_loss"] - trained[0]["heldout_loss"]) < 1e-5

    cfg = load_config("tiny", OVERRIDES + [f"data.corpus={corpus}"])
    run = Run.create(cfg, workdir, devices=jax.devices()[:1])   # and onto one device of this process
    params, step = run.restore_params()
    assert step == 6
    assert abs(evaluate(run, params, 16)["heldout_loss"] - trained[0]["heldout_loss"]) < 1e-4

    single = train(cfg, tmp_path / "single", devices=jax.devices()[:8], progress=False)
    one = [r["loss"] for r in read_metrics(tmp_path / "single" / "metrics.jsonl") if "loss" in r]
    two = [r["loss"] for r in rows if "loss" in r]
    np.testing.assert_allclose(one, two, rtol=2e-5)
    assert abs(single["heldout_loss"] - trained[0]["heldout_loss"]) < 1e-4
