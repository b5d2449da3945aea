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

Besides the random moments, two launches hit the edges of the process's life on purpose (`edges`): the
first launch gets its SIGTERM the moment the SIGTERM handler appears in /proc/PID/status (`SigCgt`), while
the imports are still running (it must exit 0 with the one `preempted before training started` line and
write nothing; /proc/PID/maps tells whether jaxlib was already loaded, which it must not be); the final,
completing launch gets its SIGTERM right after it printed its summary, during teardown (Orbax/JAX atexit,
threads, interpreter finalisation: it must still exit 0). `--startup N` only measures N launches' time from
exec to the handler (the window left where a SIGTERM kills a `jaxsink` process by the default action).
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
BEFORE_START = re.compile(r"^jaxsink: preempted before training started: .*; re-run the same command$")
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def _disposition(pid: int) -> str:
    """SIGTERM's disposition in a running process: 'caught', 'ignored' or 'default' (Linux /proc)."""
    fields = dict(ln.split(":\t", 1) for ln in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ln.startswith(("SigCgt", "SigIgn")))
    if int(fields["SigCgt"], 16) & SIGTERM_BIT:
        return "caught"
    return "ignored" if int(fields["SigIgn"], 16) & SIGTERM_BIT else "default"


def _jaxlib_loaded(pid: int) -> bool:
    return "jaxlib" in pathlib.Path(f"/proc/{pid}/maps").read_text()


def preempt_at_handler(cmd, env) -> dict:
    """Launch; SIGTERM the moment the process catches SIGTERM (start-up: the imports are still running)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    launched = time.perf_counter()
    try:
        while proc.poll() is None and _disposition(proc.pid) != "caught":
            time.sleep(0.0002)
        installed = time.perf_counter()
        jaxlib = _jaxlib_loaded(proc.pid)
        proc.send_signal(signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError):   # it ended before the handler was seen
        installed, jaxlib = time.perf_counter(), None
    out, err = proc.communicate(timeout=300)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return {"handler_after_ms": round((installed - launched) * 1000, 1),
            "popen_ms": round((launched - t0) * 1000, 1), "jaxlib_loaded_at_handler": jaxlib,
            "returncode": proc.returncode, "one_line": len(lines) == 1 and bool(BEFORE_START.match(lines[0])),
            "stderr_tail": err[-500:]}


def preempt_at_exit(cmd, env) -> dict:
    """Run to the end; once the summary is printed, SIGTERM at the moment SIGTERM's disposition stops being the
    run's handler (the command has returned: teardown, with atexit handlers, threads, finalisation)."""
    proc = subprocess.Popen(cmd, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    disposition = None
    if first.startswith("{"):
        try:
            while (disposition := _disposition(proc.pid)) == "caught":
                time.sleep(0.0002)
            proc.send_signal(signal.SIGTERM)
        except (FileNotFoundError, ProcessLookupError):
            disposition = "exited"
    out = proc.stdout.read()     # not communicate(): the text buffer behind readline() holds the summary's rest
    err = proc.stderr.read()
    proc.wait(timeout=300)
    return {"signalled": disposition not in (None, "exited"), "disposition_at_signal": disposition,
            "returncode": proc.returncode, "finished": first.startswith("{") and out.rstrip().endswith("}"),
            "stdout_tail": out[-200:], "stderr_tail": err[-500:] if proc.returncode else ""}


def startup(n: int, root) -> dict:
    """N launches of a `jaxsink train` command: exec to SIGTERM handler, ms (each then exits 0 at once)."""
    root = pathlib.Path(root)
    corpus = root / "text.txt"
    corpus.write_text(kill_points.TEXT)
    cmd = kill_points.command(root / "run", str(corpus), 4)
    runs = [preempt_at_handler(cmd, kill_points.environment()) for _ in range(n)]
    ms = sorted(r["handler_after_ms"] for r in runs)
    return {"launches": n, "handler_after_ms": {"min": ms[0], "median": ms[n // 2], "max": ms[-1]},
            "exit_0_one_line": sum(r["returncode"] == 0 and r["one_line"] for r in runs),
            "jaxlib_loaded_at_handler": sum(bool(r["jaxlib_loaded_at_handler"]) for r in runs),
            "wrote_the_workdir": (root / "run").exists(), "runs": runs}


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
            "before_start": len(lines) == 1 and bool(BEFORE_START.match(lines[0])),
            "one_line": len(lines) == 1 or (not lines and out.strip().startswith("{")),
            "stderr_tail": err[-500:] if proc.returncode or len(lines) > 1 else ""}


def run(n_signals: int, seed: int, steps: int, root, log=print, edges: bool = True) -> dict:
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
    launches, edge = [], {}
    if edges:
        edge["startup"] = preempt_at_handler(cmd, env)
        edge["startup"]["wrote_the_workdir"] = preempted.exists()
        log(json.dumps(edge["startup"]))
    for _ in range(n_signals):
        left = steps - (kill_points._steps_on_disk(preempted) or [0])[-1]
        if left <= 0:
            break                # finished: a further launch only re-runs a finished run
        delay = float(rng.uniform(0.3, timing["startup_s"] + timing["train_s"] * left / steps + timing["tail_s"]))
        launches.append(preempt_once(cmd, env, delay))
        log(json.dumps(launches[-1]))
    if edges:
        edge["teardown"] = preempt_at_exit(cmd, env)
        log(json.dumps(edge["teardown"]))
    else:
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    same = kill_points.compare(cfg, preempted, whole)
    signalled = [x for x in launches if x["signalled"]]
    return {"signals": len(signalled), "exit_0": sum(x["returncode"] == 0 for x in signalled),
            "one_line": sum(x["one_line"] for x in signalled),
            "saved_a_step": sum(x["saved_step"] is not None for x in signalled),
            "before_training": sum(x["before_start"] for x in signalled),
            "after_the_last_step": sum(x["finished"] for x in signalled),
            "saved_steps": [x["saved_step"] for x in signalled], **same, "seed": seed, "steps": steps,
            "reference": timing, "edges": edge, "launches": launches}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--signals", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", help="write the JSON here too")
    p.add_argument("--startup", type=int, default=0, help="only measure exec -> SIGTERM handler over N launches")
    args = p.parse_args()
    if args.startup:
        return in_a_tmpdir("jaxsink-startup-", lambda root, log: startup(args.startup, root), args.out, "runs")
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
