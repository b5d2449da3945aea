"""Kill a training run with SIGKILL at random moments, restart the same command until it finishes, and check
that it ends exactly where an uninterrupted run ends.

    python benchmarks/kill_points.py [--kills 30] [--seed 0] [--steps 30] [--out kill_points.json]

A small `jaxsink train` (async checkpoints every 2 steps, so that many kills land in the middle of a write)
runs once uninterrupted as the reference. Then trials: a fresh workdir, the same command started and
SIGKILLed after a delay drawn from a seeded RNG, restarted, killed again... until a launch finishes by
itself; then the next trial, until --kills kills were made. Kill moments: with probability 1/4 a uniform
fraction of the reference run's start-up time after the launch (imports, compilation, restore), otherwise a
uniform fraction of the launch's expected remaining time (the reference's training time scaled by the steps
left, plus its final evaluation and shutdown) after the launch logs its first step.

After every kill: whether an Orbax temporary folder (`<step>.orbax-checkpoint-tmp-*`) appeared (the kill
landed during a checkpoint write), and that every listed checkpoint step restores. After every trial: the
metrics rows (all but tokens_per_s) and the final state (parameters, optimizer moments, step) compared with
the reference for exact equality. Prints and writes (--out) JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_train import _kill_when, losses  # noqa: E402  (the kill helper of the fixed kill-and-resume test)

TEXT = ("The quick brown fox jumps over the lazy dog. " * 3 + "Now is the winter of our discontent.\n") * 300


def overrides(corpus: str, steps: int) -> list[str]:
    return [f"data.corpus={corpus}", "model.d_model=16", "model.d_head=4", "model.d_ff=32", "train.seq_len=16",
            "train.batch_size=4", f"train.steps={steps}", "train.log_every=1", "train.checkpoint_every=2",
            "train.eval_every=10", "train.eval_sequences=4", "train.warmup_steps=2"]


def command(workdir, corpus: str, steps: int) -> list[str]:
    return [sys.executable, "-m", "jaxsink.entry", "train", "--config", "tiny", "--workdir", str(workdir),
            "--no-progress", *(f"--config.{o}" for o in overrides(corpus, steps))]


def environment() -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _tmp_dirs(workdir) -> set[str]:
    folder = pathlib.Path(workdir) / "checkpoints"
    return {p.name for p in folder.glob("*") if "tmp" in p.name} if folder.exists() else set()


def _steps_on_disk(workdir) -> list[int]:
    folder = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit()) if folder.exists() else []


def _trained_since(workdir, t: float, step: int) -> bool:
    """Whether metrics.jsonl was written at or after time t and holds the loss of `step` (a launch that
    resumes from `step` has run its first step: imports, compilation and restore are behind it)."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    try:
        return path.stat().st_mtime >= t and max(losses(workdir), default=-1) >= step
    except (FileNotFoundError, ValueError):
        return False


def reference(workdir, cmd, env, steps: int) -> dict:
    """The uninterrupted run, timed: start-up (to its first step's metrics row), training (to its last step's
    row) and tail (final checkpoint, evaluation, shutdown) seconds."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = trained = None
    while proc.poll() is None:
        now = time.time()
        if first is None and _trained_since(workdir, t0, 0):
            first = now
        if first is not None and trained is None and max(losses(workdir), default=-1) >= steps - 1:
            trained = now
        time.sleep(0.01)
    if proc.returncode:
        raise RuntimeError(f"the reference run failed: {proc.stderr.read()[-2000:]}")
    end = time.time()
    first = first or end
    trained = trained or end
    return {"startup_s": first - t0, "train_s": trained - first, "tail_s": end - trained, "wall_s": end - t0}


def _killer(workdir, launched: float, delay: float, from_launch: bool, resumed_from: int, fired: list):
    """ready() for _kill_when: true `delay` s after the launch, or after its first step's metrics row."""
    started = [launched if from_launch else None]

    def ready():
        now = time.time()
        if started[0] is None and _trained_since(workdir, launched, resumed_from):
            started[0] = now
        if started[0] is not None and now - started[0] >= delay:
            fired.append(now)
            return True
        return False
    return ready


def check_checkpoints(cfg, workdir) -> dict:
    """Restore every listed step exactly as written: {step: error} for the unusable ones."""
    import jax
    from jaxsink.train.setup import Run
    run = Run.create(cfg, workdir, devices=jax.devices()[:1])
    store = run.checkpoints()
    bad = {}
    try:
        abstract = run.abstract_state()
        for s in store.all_steps():
            try:
                state, _, _ = store.restore(abstract, step=s)
                if int(state["step"]) != s:
                    bad[s] = f"holds step {int(state['step'])}"
            except Exception as e:  # noqa: BLE001 -- any failure is what this counts
                bad[s] = f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        store.close()
    return bad


def final_state(cfg, workdir):
    import jax
    from jaxsink.train.setup import Run
    run = Run.create(cfg, workdir, devices=jax.devices()[:1])
    store = run.checkpoints()
    try:
        state, _, _ = store.restore(run.abstract_state())
    finally:
        store.close()
    return jax.tree.map(np.asarray, state)


def metric_rows(workdir) -> list[dict]:
    from jaxsink.train.metrics import read_metrics
    return [{k: v for k, v in r.items() if k != "tokens_per_s"}
            for r in read_metrics(pathlib.Path(workdir) / "metrics.jsonl")]


def compare(cfg, killed, whole) -> dict:
    a, b = metric_rows(killed), metric_rows(whole)
    sa, sb = final_state(cfg, killed), final_state(cfg, whole)
    import jax
    same_state = jax.tree.structure(sa) == jax.tree.structure(sb) and all(
        x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)))
    loss_steps = [r["step"] for r in a if "loss" in r]
    return {"metrics_identical": a == b, "loss_rows_once_each": len(loss_steps) == len(set(loss_steps)),
            "state_identical": bool(same_state), "final_step": int(sa["step"])}


def kill_delay(rng, timing: dict, steps: int, resumed_from: int) -> tuple[float, bool]:
    """(seconds, counted from the launch?) of the next kill: see the module docstring."""
    from_launch = bool(rng.random() < 0.25)
    u = float(rng.uniform(0, 1))
    if from_launch:
        return u * timing["startup_s"], True
    return u * (timing["train_s"] * (steps - resumed_from) / steps + timing["tail_s"]), False


def trial(workdir, cmd, env, cfg, rng, timing: dict, max_kills: int) -> dict:
    """Kill-and-restart one run until a launch finishes by itself (or max_kills kills; then it is run to
    completion); checkpoints checked after each kill."""
    kills, starts = [], []
    while len(kills) < max_kills:
        before_tmp, resumed_from = _tmp_dirs(workdir), (_steps_on_disk(workdir) or [0])[-1]
        delay, from_launch = kill_delay(rng, timing, cfg.train.steps, resumed_from)
        starts.append(resumed_from)
        fired: list = []
        launched = time.time()
        _kill_when(cmd, env, workdir, _killer(workdir, launched, delay, from_launch, resumed_from, fired))
        if not fired:
            break    # the launch ended by itself before its kill moment
        new_tmp = sorted(_tmp_dirs(workdir) - before_tmp)
        kills.append({"after_s": round(fired[0] - launched, 3), "phase": "launch" if from_launch else "running",
                      "resumed_from": resumed_from, "steps_done": max(losses(workdir), default=-1)
                      if (pathlib.Path(workdir) / "metrics.jsonl").exists() else -1,
                      "mid_checkpoint_write": bool(new_tmp), "tmp_dirs": new_tmp,
                      "unusable_checkpoints": check_checkpoints(cfg, workdir)})
    else:   # kill budget spent: the same command, to completion
        starts.append((_steps_on_disk(workdir) or [0])[-1])
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"kills": kills, "launches": len(starts), "started_from_steps": starts}


def run(n_kills: int, seed: int, steps: int, root, max_kills_per_trial: int = 8, log=print) -> dict:
    from jaxsink.config import load_config
    root = pathlib.Path(root)
    corpus = root / "text.txt"
    corpus.write_text(TEXT)
    cfg = load_config("tiny", overrides(str(corpus), steps))
    env = environment()
    whole = root / "whole"
    timing = reference(whole, command(whole, str(corpus), steps), env, steps)
    log(f"reference: {json.dumps({k: round(v, 2) for k, v in timing.items()})}")
    rng = np.random.default_rng(seed)
    trials = []
    while sum(len(t["kills"]) for t in trials) < n_kills:
        workdir = root / f"killed{len(trials)}"
        left = n_kills - sum(len(t["kills"]) for t in trials)
        t = trial(workdir, command(workdir, str(corpus), steps), env, cfg, rng, timing,
                  min(left, max_kills_per_trial))
        t.update(compare(cfg, workdir, whole))
        t["leftover_tmp_dirs"] = sorted(_tmp_dirs(workdir))
        trials.append(t)
        log(f"trial {len(trials)}: {len(t['kills'])} kills "
            f"({sum(k['mid_checkpoint_write'] for k in t['kills'])} mid-write), "
            f"metrics identical {t['metrics_identical']}, state identical {t['state_identical']}")
        if not t["kills"]:
            log("a trial's first launch finished before its kill moment")
    kills = [k for t in trials for k in t["kills"]]
    return {
        "kills": len(kills),
        "mid_checkpoint_write": sum(k["mid_checkpoint_write"] for k in kills),
        "during_launch": sum(k["phase"] == "launch" for k in kills),
        "resumes": sum(t["launches"] - 1 for t in trials),
        "resumes_from_a_checkpoint": sum(s > 0 for t in trials for s in t["started_from_steps"][1:]),
        "trials": len(trials),
        "all_metrics_identical": all(t["metrics_identical"] for t in trials),
        "all_loss_rows_once_each": all(t["loss_rows_once_each"] for t in trials),
        "all_states_identical": all(t["state_identical"] for t in trials),
        "unusable_checkpoints": sum(len(k["unusable_checkpoints"]) for k in kills),
        "seed": seed, "steps": steps, "reference": timing, "details": trials,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--out", help="write the JSON here too")
    p.add_argument("--keep", help="keep the workdirs in this folder (default: a temporary folder, removed)")
    args = p.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    root = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="jaxsink-kill-points-"))
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        result = run(args.kills, args.seed, args.steps, root, log=lambda m: print(m, file=sys.stderr))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    result["wall_s"] = round(time.time() - t0, 1)
    summary = {k: v for k, v in result.items() if k != "details"}
    print(json.dumps(summary, indent=2))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
