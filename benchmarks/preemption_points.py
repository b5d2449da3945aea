"""SIGTERM a training run (a preemption notice) at seeded random moments and re-run the same command until it
finishes; check that every notice ended the launch with exit 0 and one line, and that the run ends exactly
where an uninterrupted run ends.

    python benchmarks/preemption_points.py [--signals 20] [--seed 0] [--steps 20] [--out preemption.json]

The run and the uninterrupted reference are `benchmarks/kill_points.py`'s (async checkpoints every 2 steps).
Each launch gets one SIGTERM at a uniform moment between 0.3 s after its start and its expected end (the
reference's start-up, its training time scaled by the steps left, and its tail), so some land in start-up,
compilation or restore, most in training, a few after the last step; it must exit
0 with one stderr line: `jaxsink: preempted: saved the checkpoint of step N ...`, or the run's JSON summary on
stdout when the notice came after the last step. After all signals the same command runs to completion;
final state (parameters, optimizer moments, step) and metrics rows (all but tokens_per_s) are compared
with the reference for exact equality. Prints and writes (--out) JSON.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import kill_points  # noqa: E402  (same run, reference and comparison)

PREEMPTED = re.compile(r"^jaxsink: preempted: saved the checkpoint of step (\d+) in .*; re-run the same command")


def preempt_once(cmd, env, delay: float) -> dict:
    """Launch, SIGTERM after `delay` s, wait; what the launch did with the notice."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.communicate(timeout=delay)
        signalled = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        signalled = True
    out, err = proc.communicate(timeout=300)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    match = PREEMPTED.match(lines[0]) if len(lines) == 1 else None
    return {"delay_s": round(delay, 3), "signalled": signalled, "returncode": proc.returncode,
            "saved_step": int(match.group(1)) if match else None, "finished": out.strip().startswith("{"),
            "one_line": len(lines) == 1 or (not lines and out.strip().startswith("{")),
            "stderr_tail": err[-500:] if proc.returncode or len(lines) > 1 else ""}


def run(n_signals: int, seed: int, steps: int, root, log=print) -> dict:
    from jaxsink.config import load_config
    root = pathlib.Path(root)
    corpus = root / "text.txt"
    corpus.write_text(kill_points.TEXT)
    cfg = load_config("tiny", kill_points.overrides(str(corpus), steps))
    env = kill_points.environment()
    whole, preempted = root / "whole", root / "preempted"
    timing = kill_points.reference(whole, kill_points.command(whole, str(corpus), steps), env, steps)
    log(f"reference: {json.dumps({k: round(v, 2) for k, v in timing.items()})}")
    rng = np.random.default_rng(seed)
    cmd = kill_points.command(preempted, str(corpus), steps)
    launches = []
    for _ in range(n_signals):
        left = steps - (kill_points._steps_on_disk(preempted) or [0])[-1]
        delay = float(rng.uniform(0.3, timing["startup_s"] + timing["train_s"] * left / steps + timing["tail_s"]))
        launches.append(preempt_once(cmd, env, delay))
        log(json.dumps(launches[-1]))
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    same = kill_points.compare(cfg, preempted, whole)
    signalled = [x for x in launches if x["signalled"]]
    return {"signals": len(signalled), "exit_0": sum(x["returncode"] == 0 for x in signalled),
            "one_line": sum(x["one_line"] for x in signalled),
            "saved_a_step": sum(x["saved_step"] is not None for x in signalled),
            "after_the_last_step": sum(x["finished"] for x in signalled),
            "saved_steps": [x["saved_step"] for x in signalled], **same, "seed": seed, "steps": steps,
            "reference": timing, "launches": launches}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--signals", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", help="write the JSON here too")
    args = p.parse_args()
    in_a_tmpdir("jaxsink-preemption-", lambda root, log: run(args.signals, args.seed, args.steps, root, log=log),
                args.out, details="launches")


def in_a_tmpdir(prefix: str, run_fn, out: str | None, details: str) -> None:
    """run_fn(root, log) in a fresh temporary folder (removed after); print its summary, write all to `out`."""
    root = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    t0 = time.time()
    try:
        result = run_fn(root, lambda m: print(m, file=sys.stderr))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps({k: v for k, v in result.items() if k != details}, indent=2))
    if out:
        pathlib.Path(out).write_text(json.dumps(result, indent=1))

if __name__ == "__main__":
    main()
