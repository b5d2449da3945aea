"""Training throughput and model FLOP utilisation, on 1 and on several (simulated CPU) devices.

    python benchmarks/train_throughput.py [--config tiny] [--devices 1 2] [--steps 20] [--dtype float32 bfloat16]
                                          [--platform cpu|cuda|tpu] [--override model.remat=full ...]

Each device count runs in its own process (JAX fixes the device count at start-up). Model FLOPs per token
= 6 N (N = parameters except the input embedding, the head included) + 12 L T H d_head (attention scores and
values, forward and backward). MFU is measured against a matmul peak timed in the same process.
Prints a table and writes JSON (--out).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def matmul_peak(dtype: str, n: int = 2048, reps: int = 10) -> float:
    """FLOP/s of a jitted n x n matmul (best of `reps`), the hardware reference for MFU."""
    import jax
    import jax.numpy as jnp
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def model_flops_per_token(spec, seq_len: int) -> float:
    from jaxsink.model import count_params, init_params
    params = init_params(spec, 0)
    n = count_params(params) - params["embed"].size
    if spec.tie_embeddings:
        n += params["embed"].size
    return 6 * n + 12 * spec.n_layers * seq_len * spec.n_heads * spec.d_head


def worker(args) -> dict:
    """Time `steps` training steps of the config on all local devices (data parallel)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jaxsink.config import apply_overrides, load_config
    from jaxsink.train.setup import Run
    from jaxsink.train.step import make_train_step

    cfg = load_config(args.config, [f"model.dtype={args.dtype}", f"data.corpus={args.corpus}"])
    apply_overrides(cfg, args.override)
    run = Run.create(cfg, "/tmp/jaxsink-bench-unused")
    state = run.init_state()
    sh = run.state_shardings()
    step = jax.jit(make_train_step(run.graphdef, run.optimizer, cfg.train), in_shardings=(sh, run.batch_sharding()),
                   out_shardings=(sh, None), donate_argnums=0)
    batch = run.train_batch(0)
    with jax.set_mesh(run.mesh):
        t0 = time.perf_counter()
        step = step.lower(state, batch).compile()
        compile_s = time.perf_counter() - t0
        memory = step.memory_analysis()
        state, m = step(state, batch)
        jax.block_until_ready(m)
        times = []
        for i in range(args.steps):
            batch = run.train_batch(i + 1)
            t0 = time.perf_counter()
            state, m = step(state, batch)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    tokens = run.tokens_per_step
    flops = model_flops_per_token(run.spec, cfg.train.seq_len) * tokens / med
    on_cpu = jax.devices()[0].platform == "cpu"
    # on CPU one device's matmul already uses every core; accelerators need a larger matmul to reach peak
    peak = matmul_peak(jnp.dtype(args.dtype), n=2048 if on_cpu else 8192)
    return {"config": args.config, "dtype": args.dtype, "devices": len(jax.devices()), "compile_s": compile_s,
            "step_s_median": med, "step_s_min": min(times), "step_s_max": max(times),
            "tokens_per_s": tokens / med, "model_gflops_per_s": flops / 1e9, "peak_gflops_per_s": peak / 1e9,
            "mfu": flops / peak, "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
            "platform": jax.devices()[0].platform, "overrides": list(args.override),
            "params": int(sum(np.size(x) for x in jax.tree.leaves(state["params"])))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny")
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--corpus", default="shakespeare")
    p.add_argument("--override", nargs="*", default=[], help="extra config overrides, e.g. train.batch_size=8")
    p.add_argument("--platform", default="cpu", help="cpu (simulated devices), cuda or tpu (all local chips)")
    p.add_argument("--out", default="")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.dtype = args.dtype[0]
        print(json.dumps(worker(args)))
        return
    rows = []
    for dtype in args.dtype:
        for n in args.devices:
            env = {**os.environ, "JAX_PLATFORMS": args.platform}
            if args.platform == "cpu":
                env["JAX_NUM_CPU_DEVICES"] = str(n)
            cmd = [sys.executable, __file__, "--worker", "--config", args.config, "--dtype", dtype,
                   "--steps", str(args.steps), "--corpus", args.corpus, "--override", *args.override]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{r['config']:>8} {r['dtype']:>9} devices={r['devices']}  step {r['step_s_median']*1e3:7.1f} ms "
                  f"(min {r['step_s_min']*1e3:.1f}, max {r['step_s_max']*1e3:.1f})  {r['tokens_per_s']:9.0f} tokens/s  "
                  f"{r['model_gflops_per_s']:6.1f} GFLOP/s of {r['peak_gflops_per_s']:6.1f} peak  MFU {r['mfu']:.1%}",
                  flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
