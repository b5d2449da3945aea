"""Preemption: SIGTERM at seeded random moments of a real `jaxsink train` makes it save a checkpoint at the next
step boundary and exit 0 with one line; re-running the same command ends exactly as an uninterrupted run.

The harness is `benchmarks/preemption_points.py` (which sends many more signals); this is its CI-sized run,
with the two edges of a process's life hit on purpose: a SIGTERM the moment the handler exists (the imports
still running) and one during teardown (after the summary is printed). Before `jaxsink.entry` both killed the
process by the default action (status -15; seen once in CI, 11 s after a launch). The multi-process case
(the notice reaching one process of two) is in test_multihost_faults.py.
"""
import importlib.util
import os
import pathlib
import signal
import subprocess
import sys
import tomllib

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
    first, last = r["edges"]["startup"], r["edges"]["teardown"]
    # start-up: the handler is there before jaxlib is loaded; the notice ends the launch with one line and exit
    # 0, nothing written; the launches after it run normally
    assert first["jaxlib_loaded_at_handler"] is False, first
    assert first["returncode"] == 0 and first["one_line"] and not first["wrote_the_workdir"], first
    # teardown: SIGTERM is still not the default action after the summary is printed, and the launch exits 0
    assert last["signalled"] and last["disposition_at_signal"] != "default", last
    assert last["returncode"] == 0 and last["finished"], last
    assert r["signals"] >= 1, r["launches"]
    assert r["exit_0"] == r["one_line"] == r["signals"], r["launches"]
    assert r["saved_a_step"] >= 1, r["launches"]          # at least one notice landed during training
    assert r["state_identical"] and r["final_step"] == STEPS, r
    assert r["metrics_identical"] and r["loss_rows_once_each"], r


def test_the_console_script_installs_the_handler_before_anything_heavy():
    """`jaxsink` runs `jaxsink.entry:main`, whose imports (and those of `jaxsink` itself) are standard library
    only: JAX, NumPy, Flax and Orbax load after the SIGTERM handler is installed."""
    root = pathlib.Path(__file__).resolve().parents[1]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["jaxsink"] == "jaxsink.entry:main"
    code = ("import sys, jaxsink.entry; heavy = ('jax', 'jaxlib', 'numpy', 'flax', 'orbax', 'optax', 'ml_collections');"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_notice_before_training_exits_0_writes_nothing_and_restores_the_handler(tmp_path, capsys):
    """cli.main in this process with the notice already set (a SIGTERM during the imports): one line, status 0,
    no workdir; the caller's SIGTERM handler is back afterwards and the notice is cleared."""
    from jaxsink import cli, notice
    before = signal.getsignal(signal.SIGTERM)
    notice.NOTICE.set()
    try:
        assert cli.main(["train", "--config", "tiny", "--workdir", str(tmp_path / "run")]) == 0
    finally:
        notice.NOTICE.clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and preemption_points.BEFORE_START.match(err[0]), err
    assert not (tmp_path / "run").exists()
    assert signal.getsignal(signal.SIGTERM) is before


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


def test_the_supervisor_passes_on_an_early_notice_and_reports_a_child_killed_in_start_up(tmp_path, monkeypatch,
                                                                                         capsys):
    """A multi-process command's supervisor got the notice before its child existed: it passes it on once the
    child exists; the child (here a stand-in without a handler, as in its first milliseconds) dies of it, and
    the supervisor ends with the one line and status 0: the child had started nothing."""
    from jaxsink import notice, supervise
    child = tmp_path / "child"
    child.write_text("#!/bin/sh\nexec sleep 30\n")
    child.chmod(0o755)
    monkeypatch.setattr(supervise.sys, "executable", str(child))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    notice.NOTICE.set()
    try:
        assert supervise.run_child(["train"]) == 0
    finally:
        notice.NOTICE.clear()
        for s, h in handlers.items():
            signal.signal(s, h)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and preemption_points.BEFORE_START.match(err[0]), err


@pytest.mark.parametrize("module", ["jaxsink.entry", "jaxsink.cli"])
def test_sigterm_in_teardown_is_ignored_by_both_ways_to_start_the_command(module):
    """`python -m jaxsink.entry` (what the console script runs) and `python -m jaxsink.cli`: once the command
    returned (here `--help`, printed), SIGTERM is ignored to the end; with a Python handler left in place,
    finalisation put the default back and a SIGTERM then gave status -15."""
    import time
    for _ in range(3):       # again if the process was gone before its disposition could be read (a slow poll)
        proc = subprocess.Popen([sys.executable, "-m", module, "--help"], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.stdout.readline().startswith("usage: jaxsink")
        try:
            while (disposition := preemption_points._disposition(proc.pid)) == "caught":
                time.sleep(0.0002)
            proc.send_signal(signal.SIGTERM)
        except FileNotFoundError:
            disposition = "exited"
        proc.stdout.read()
        if disposition != "exited":
            break
    assert (disposition, proc.wait(timeout=60)) == ("ignored", 0)
