"""What `model.remat` and `model.scan_layers` buy: compile time, XLA temporary memory and step time of the
jitted training step, against depth.

    python benchmarks/remat_scan.py [--config tiny] [--layers 2 8 16] [--steps 5] [--out remat_scan.json]

Each (depth, mode) runs `train_throughput.worker` in its own process on one device. Scan makes compile time
independent of depth; remat trades recomputation (step time) for activation memory (XLA temporaries).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

MODES = {"plain": [], "scan": ["model.scan_layers=True"], "remat=full": ["model.remat=full"],
         "remat=dots": ["model.remat=dots"], "scan+remat=full": ["model.scan_layers=True", "model.remat=full"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny")
    p.add_argument("--layers", type=int, nargs="+", default=[2, 8, 16])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--dtype", default="float32")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default="")
    args = p.parse_args()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_throughput.py")
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), "JAX_NUM_CPU_DEVICES": "1"}
    rows = []
    print(f"{'layers':>6} {'mode':>16} {'compile s':>10} {'temp MB':>9} {'step ms':>9} {'tokens/s':>9}")
    for n_layers in args.layers:
        for mode in args.modes:
            cmd = [sys.executable, script, "--worker", "--config", args.config, "--dtype", args.dtype,
                   "--steps", str(args.steps), "--override", f"model.n_layers={n_layers}", *MODES[mode]]
            r = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                           .stdout.strip().splitlines()[-1])
            r.update(layers=n_layers, mode=mode)
            rows.append(r)
            print(f"{n_layers:>6} {mode:>16} {r['compile_s']:>10.2f} {(r['temp_bytes'] or 0) / 2**20:>9.1f} "
                  f"{r['step_s_median'] * 1e3:>9.1f} {r['tokens_per_s']:>9.0f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
