"""Compile time and memory of the scanned training step against depth (issue 13: 64 layers within 1.3x of 32).

    python benchmarks/compile_depth.py [--config paper_7b] [--topology v5p-256] [--depths 32 64] [--reps 2]

Each compile runs `jaxsink compile --programs=train` in its own process (no in-process compilation cache),
the depths interleaved (32, 64, 32, 64, ...) so that a change in the machine's load hits both; the ratio is
taken between the fastest compile of each depth. With `model.scan_layers` the layers' parameters are stored
stacked (`jaxsink/model/layout.py`), so the program's size does not grow with depth. Only the scanned
program is timed: the shallow unrolled programs that `jaxsink compile` adds for its cost estimate are not.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

GiB = 2 ** 30


def compile_once(config: str, topology: str, depth: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [sys.executable, "-m", "jaxsink.cli", "compile", "--config", config, "--topology", topology,
               "--programs=train", "--no-estimate", "--json", out, f"--config.model.n_layers={depth}"]
        tic = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"compile at depth {depth} failed: {done.stderr.strip().splitlines()[-1:]}")
        train = json.loads(open(out).read())["programs"][0]
    return {"depth": depth, "compile_seconds": train["compile_seconds"], "total_gib": train["total_bytes"] / GiB,
            "temp_gib": train["temp_bytes"] / GiB, "wall_seconds": time.perf_counter() - tic,
            "load": os.getloadavg()[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="paper_7b")
    p.add_argument("--topology", default="v5p-256")
    p.add_argument("--depths", type=int, nargs=2, default=(32, 64))
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args()
    rows = []
    for rep in range(args.reps):
        for depth in args.depths:
            rows.append({"rep": rep, **compile_once(args.config, args.topology, depth)})
            r = rows[-1]
            print(f"rep {rep} depth {depth}: compile {r['compile_seconds']:.1f} s, {r['total_gib']:.2f} GiB/chip "
                  f"(temp {r['temp_gib']:.2f}), load {r['load']:.1f}", flush=True)
    best = {d: min(r["compile_seconds"] for r in rows if r["depth"] == d) for d in args.depths}
    lo, hi = args.depths
    print(f"fastest compile: {lo} layers {best[lo]:.1f} s, {hi} layers {best[hi]:.1f} s, "
          f"ratio {best[hi] / best[lo]:.2f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
