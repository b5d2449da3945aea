"""Cost of training-time spike/sink statistics: step time with statistics vs without, in one process.

    python benchmarks/stats_overhead.py [--config tiny] [--steps 30]

The statistics step (captures residuals and attention probabilities, reduces them in the jitted step) and
the plain step are timed alternately on the same batches; the overhead of logging every N steps is
(t_stats - t_plain) / (N * t_plain).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--override", nargs="*", default=[])
    args = p.parse_args()
    from jaxsink.config import load_config
    from jaxsink.train.setup import Run
    from jaxsink.train.stats import training_stats
    from jaxsink.train.step import make_train_step
    cfg = load_config(args.config, args.override)
    run = Run.create(cfg, "/tmp/jaxsink-bench-unused", devices=jax.devices()[:1])
    sh = run.state_shardings()

    def jit(fn):
        return jax.jit(fn, in_shardings=(sh, run.batch_sharding()), out_shardings=(sh, None), donate_argnums=0)
    plain = jit(make_train_step(run.graphdef, run.optimizer, cfg.train))
    capture, fn = training_stats(cfg)
    with_stats = jit(make_train_step(run.graphdef, run.optimizer, cfg.train, capture=capture, stats_fn=fn))
    state = run.init_state()
    times = {"plain": [], "stats": []}
    with jax.set_mesh(run.mesh):
        for name, step in (("plain", plain), ("stats", with_stats)):   # compile both
            state, m = step(state, run.train_batch(0))
            jax.block_until_ready(m)
        for i in range(args.steps):
            for name, step in (("plain", plain), ("stats", with_stats)):
                batch = run.train_batch(i + 1)
                t0 = time.perf_counter()
                state, m = step(state, batch)
                jax.block_until_ready(m)
                times[name].append(time.perf_counter() - t0)
    tp, ts = statistics.median(times["plain"]), statistics.median(times["stats"])
    result = {"config": args.config, "plain_step_ms": tp * 1e3, "stats_step_ms": ts * 1e3,
              "overhead_every_step": ts / tp - 1, "overhead_every_100": (ts - tp) / (100 * tp),
              "overhead_every_10": (ts - tp) / (10 * tp)}
    for k, v in result.items():
        print(f"{k:>22}: {v:.4f}" if isinstance(v, float) else f"{k:>22}: {v}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
