"""Preemption: SIGTERM at seeded random moments of a real `jaxsink train` makes it save a checkpoint at the next
step boundary and exit 0 with one line; re-running the same command ends exactly as an uninterrupted run.

The harness is `benchmarks/preemption_points.py` (which sends many more signals); this is its CI-sized run.
The multi-process case (the notice reaching one process of two) is in test_multihost_faults.py.
"""
import importlib.util
import os
import pathlib
import signal

import jax
import pytest

from jaxsink.train import preemption

_spec = importlib.util.spec_from_file_location(
    "preemption_points", pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "preemption_points.py")
preemption_points = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(preemption_points)

SEED, STEPS, LAUNCHES = 1, 20, 2


def test_sigterm_at_random_moments_saves_exits_0_and_resumes_exactly(tmp_path):
    r = preemption_points.run(LAUNCHES, SEED, STEPS, tmp_path, log=lambda m: None)
    print({k: v for k, v in r.items() if k != "launches"})
    if any(x.get("returncode") == -15 and x.get("saved_step") is None for x in r["launches"]):
        # known open bug (closing note of stop 19): a SIGTERM outside the CLI handler's lifetime (interpreter
        # start-up or teardown) kills the process with the default action; the in-loop path is tested below
        pytest.xfail(f"SIGTERM landed outside the handler's lifetime: {r['launches']}")
    assert r["signals"] >= 1, r["launches"]
    assert r["exit_0"] == r["one_line"] == r["signals"], r["launches"]
    assert r["saved_a_step"] >= 1, r["launches"]          # at least one notice landed during training
    assert r["state_identical"] and r["final_step"] == STEPS, r
    assert r["metrics_identical"] and r["loss_rows_once_each"], r


def test_notice_in_process_stops_at_the_next_step_boundary(tmp_path):
    """train() in this process, SIGTERM sent to itself before the loop: it saves step 1 and raises
    Preempted (one line); the handler is put back afterwards; the re-run finishes the remaining steps."""
    from jaxsink.config import load_config
    from jaxsink.train import loop
    corpus = tmp_path / "text.txt"
    corpus.write_text(preemption_points.kill_points.TEXT)
    cfg = load_config("tiny", preemption_points.kill_points.overrides(str(corpus), 4))
    compile_steps = loop.compile_steps

    def compile_then_signal(*a, **k):
        steps = compile_steps(*a, **k)
        os.kill(os.getpid(), signal.SIGTERM)   # a notice that arrives during start-up
        return steps
    before = signal.getsignal(signal.SIGTERM)
    loop.compile_steps = compile_then_signal
    try:
        with pytest.raises(preemption.Preempted, match=r"^preempted: saved the checkpoint of step 1 in ") as e:
            loop.train(cfg, tmp_path / "run", devices=jax.devices()[:1], progress=False)
    finally:
        loop.compile_steps = compile_steps
    assert "\n" not in str(e.value)
    assert signal.getsignal(signal.SIGTERM) is before
    assert loop.train(cfg, tmp_path / "run", devices=jax.devices()[:1], progress=False)["start_step"] == 1
