"""Faults of a multi-host job on localhost: 2 `jaxsink train` processes x 2 CPU devices (jax.distributed on
127.0.0.1); one process is SIGKILLed in the middle of a step or of a checkpoint write, or SIGTERMed (a
preemption notice); then the same command is re-run on both.

    python benchmarks/multihost_faults.py [--trials 12] [--seed 0] [--out multihost_faults.json]

Checked for every trial: the survivor exits by itself within a bound (heartbeat timeout 5 s; bound
SURVIVOR_BOUND_S) with one line (`jaxsink: error: the distributed job lost a process ...`, status 3) or,
after a SIGTERM, both exit 0 with `jaxsink: preempted: ...` at the same step; every listed checkpoint step
restores (a half-written one is never listed); the re-run finishes, and its final state and metrics rows
(all but tokens_per_s) equal an uninterrupted 2-process run's bit for bit. Checkpoints on a local folder
(Orbax renames a temporary folder) or with Orbax's object-store protocol (`commit_file`: written in place,
committed by commit_success.txt, as on gs://), chosen per trial. Prints and writes (--out) JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import kill_points  # noqa: E402  (comparison and checkpoint checks)

STEPS, HEARTBEAT_S, SURVIVOR_BOUND_S = 12, 5, 90
KINDS = ("kill_mid_step", "kill_mid_checkpoint", "sigterm")


def overrides(corpus: str) -> list[str]:
    return [f"data.corpus={corpus}", "model.d_model=16", "model.d_head=4", "model.d_ff=32", "train.seq_len=16",
            "train.batch_size=8", f"train.steps={STEPS}", "train.log_every=1", "train.checkpoint_every=2",
            "train.eval_sequences=8", "train.warmup_steps=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(workdir, corpus: str, atomicity: str) -> list[subprocess.Popen]:
    port = _free_port()
    env = {**kill_points.environment(), "JAX_NUM_CPU_DEVICES": "2", "JAXSINK_CHECKPOINT_ATOMICITY": atomicity}
    return [subprocess.Popen(
        [sys.executable, "-m", "jaxsink.entry", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
         "--process-id", str(i), "--heartbeat-timeout", str(HEARTBEAT_S), "train", "--config", "tiny",
         "--workdir", str(workdir), "--no-progress", *(f"--config.{o}" for o in overrides(corpus))],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]


def finish(procs, timeout: float = 600) -> list[tuple[int, str]]:
    """(status, stderr) of each process once it ends."""
    ends = []
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        ends.append((p.returncode, err))
    return ends


def half_written(workdir, atomicity: str) -> list[str]:
    """Checkpoint folders being written: Orbax's temporary folders, or (commit_file) steps without the commit file."""
    folder = pathlib.Path(workdir) / "checkpoints"
    if not folder.exists():
        return []
    if atomicity == "commit_file":
        return sorted(p.name for p in folder.iterdir() if p.name.isdigit() and not (p / "commit_success.txt").exists())
    return sorted(p.name for p in folder.iterdir() if "tmp" in p.name)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _signal_process(proc, sig) -> None:
    """The jaxsink process (child of the supervising CLI) gets `sig`; SIGKILL: both die, as with a lost host."""
    if sig == signal.SIGTERM:
        proc.send_signal(sig)          # the supervisor passes it on
        return
    for c in _children(proc.pid):
        os.kill(c, sig)
    proc.send_signal(sig)


def _wait_for(pred, procs, timeout: float = 300, poll: float = 0.005) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if pred():
            return True
        time.sleep(poll)
    return False


def fault(workdir, corpus: str, kind: str, victim: int, atomicity: str, rng) -> dict:
    """One faulted launch: the fault, then how each process ended."""
    procs = launch(workdir, corpus, atomicity)
    first_step = int(rng.integers(1, STEPS - 4))

    def steps_done():
        return max(kill_points.losses(workdir), default=-1) if (pathlib.Path(workdir) / "metrics.jsonl").exists() \
            else -1
    _wait_for(lambda: steps_done() >= first_step, procs)
    phase = "step"
    if kind == "kill_mid_checkpoint":
        phase = "checkpoint" if _wait_for(lambda: half_written(workdir, atomicity), procs) else "step"
    t_fault = time.time()
    _signal_process(procs[victim], signal.SIGTERM if kind == "sigterm" else signal.SIGKILL)
    seen = half_written(workdir, atomicity)
    ends = []
    for i, p in enumerate(procs):
        try:
            _, err = p.communicate(timeout=SURVIVOR_BOUND_S)
        except subprocess.TimeoutExpired:
            _signal_process(p, signal.SIGKILL)
            _, err = p.communicate()
            ends.append({"process": i, "hung": True, "returncode": p.returncode, "stderr": err[-400:]})
            continue
        lines = [ln for ln in err.splitlines() if ln.strip()]
        ends.append({"process": i, "hung": False, "returncode": p.returncode, "exit_s": round(time.time() - t_fault, 1),
                     "one_line": len(lines) == 1, "line": lines[-1][:300] if lines else "",
                     "stderr": "" if len(lines) <= 1 else err[-1500:]})
    return {"kind": kind, "victim": victim, "atomicity": atomicity, "after_step": first_step, "phase": phase,
            "half_written_at_fault": seen, "ends": ends}


def judge(f: dict) -> bool:
    """Survivors exited by themselves, one line each, with the expected status."""
    survivors = [e for e in f["ends"] if e["process"] != f["victim"] or f["kind"] == "sigterm"]
    if f["kind"] == "sigterm":
        return all(not e["hung"] and e["returncode"] == 0 and e["one_line"] and "preempted" in e["line"]
                   for e in survivors) and len({e["line"].split(" in ")[0] for e in survivors}) == 1
    return all(not e["hung"] and e["returncode"] == 3 and e["one_line"] and "lost a process" in e["line"]
               for e in survivors)


def trial(root, corpus: str, cfg, reference, kind: str, victim: int, atomicity: str, rng) -> dict:
    workdir = pathlib.Path(root) / f"{kind}-{victim}-{atomicity}-{int(time.time() * 1000) % 100000}"
    f = fault(workdir, corpus, kind, victim, atomicity, rng)
    f["survivors_ok"] = judge(f)
    f["unusable_checkpoints"] = kill_points.check_checkpoints(cfg, workdir)
    f["steps_listed"] = kill_points._steps_on_disk(workdir)
    ends = finish(launch(workdir, corpus, atomicity))
    f["rerun_returncodes"] = [rc for rc, _ in ends]
    f["rerun_stderr"] = "" if all(rc == 0 for rc, _ in ends) else ends[0][1][-1500:] + ends[1][1][-1500:]
    f.update(kill_points.compare(cfg, workdir, reference) if f["rerun_returncodes"] == [0, 0] else {})
    return f


def reference_run(root, corpus: str) -> pathlib.Path:
    whole = pathlib.Path(root) / "whole"
    ends = finish(launch(whole, corpus, "auto"))
    if any(rc for rc, _ in ends):
        raise RuntimeError(f"the uninterrupted run failed: {ends[0][1][-2000:]}")
    return whole


def setup(root):
    from jaxsink.config import load_config
    corpus = pathlib.Path(root) / "text.txt"
    corpus.write_text(kill_points.TEXT)
    return str(corpus), load_config("tiny", overrides(str(corpus)))


def run(n_trials: int, seed: int, root, log=print) -> dict:
    corpus, cfg = setup(root)
    reference = reference_run(root, corpus)
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n_trials):
        kind, victim = KINDS[i % len(KINDS)], int(rng.integers(0, 2))
        atomicity = ("auto", "commit_file")[(i // len(KINDS)) % 2]
        trials.append(trial(root, corpus, cfg, reference, kind, victim, atomicity, rng))
        log(json.dumps({k: v for k, v in trials[-1].items() if k not in ("ends",)}))
    ok = [t for t in trials if t["survivors_ok"] and not t["unusable_checkpoints"] and t.get("state_identical")
          and t.get("metrics_identical")]
    return {"trials": len(trials), "all_ok": len(ok),
            "by_kind": {k: sum(t["kind"] == k for t in trials) for k in KINDS},
            "mid_checkpoint_write": sum(t["phase"] == "checkpoint" for t in trials),
            "commit_file": sum(t["atomicity"] == "commit_file" for t in trials),
            "survivor_exit_s_max": max((e["exit_s"] for t in trials for e in t["ends"] if not e["hung"]), default=0),
            "hung": sum(e["hung"] for t in trials for e in t["ends"]),
            "unusable_checkpoints": sum(len(t["unusable_checkpoints"]) for t in trials),
            "seed": seed, "details": trials}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args()
    from preemption_points import in_a_tmpdir
    in_a_tmpdir("jaxsink-multihost-", lambda root, log: run(args.trials, args.seed, root, log=log), args.out,
                details="details")

if __name__ == "__main__":
    main()
