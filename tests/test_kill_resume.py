"""Kill points drawn at random: a real `jaxsink train` SIGKILLed at seeded random moments (many during async
checkpoint writes), restarted with the same command until it finishes, ends exactly as an uninterrupted run.

The harness is `benchmarks/kill_points.py` (which runs many more kill points); this is its CI-sized run.
"""
import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest

from jaxsink.config import load_config
from jaxsink.train.loop import train
from jaxsink.train.metrics import read_metrics

_spec = importlib.util.spec_from_file_location(
    "kill_points", pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "kill_points.py")
kill_points = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kill_points)

SEED, STEPS, KILLS = 6, 20, 3   # seed 6 draws kill moments at 34%, 37% and 63% of the time left


def test_random_kill_points_resume_to_the_uninterrupted_result(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text(kill_points.TEXT)
    cfg = load_config("tiny", kill_points.overrides(str(corpus), STEPS))
    env = kill_points.environment()
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    timing = kill_points.reference(whole, kill_points.command(whole, str(corpus), STEPS), env, STEPS)
    result = kill_points.trial(killed, kill_points.command(killed, str(corpus), STEPS), env, cfg,
                               np.random.default_rng(SEED), timing, max_kills=KILLS)
    kills = result["kills"]
    print(f"kill points: {len(kills)} kills ({sum(k['mid_checkpoint_write'] for k in kills)} during a checkpoint "
          f"write), {result['launches'] - 1} restarts from steps {result['started_from_steps'][1:]}; "
          f"{json.dumps(kills)}")
    assert kills, "no kill landed before the run finished"
    for k in kills:
        assert k["unusable_checkpoints"] == {}, k
    same = kill_points.compare(cfg, killed, whole)
    assert same["final_step"] == STEPS and same["state_identical"], same
    assert same["loss_rows_once_each"], same
    assert same["metrics_identical"], same        # every row but tokens_per_s, bit for bit


def test_rerunning_a_finished_run_leaves_its_metrics_unchanged(tmp_path):
    corpus = tmp_path / "text.txt"
    corpus.write_text(kill_points.TEXT)
    cfg = load_config("tiny", kill_points.overrides(str(corpus), 2))
    train(cfg, tmp_path / "run", devices=jax.devices()[:1], progress=False)
    before = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train(cfg, tmp_path / "run", devices=jax.devices()[:1], progress=False)
    assert read_metrics(tmp_path / "run" / "metrics.jsonl") == before
