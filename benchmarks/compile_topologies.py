"""Compiled figures of the paper-scale configs on real TPU topologies (libtpu on a CPU machine; no TPU needed).

    python benchmarks/compile_topologies.py [--only NAME ...] [--out benchmarks/compile_results] [--table]

Each case runs `jaxsink compile` in its own process (one at a time), writes OUT/NAME.json, and the table of
every JSON in OUT is printed as Markdown (what BENCHMARKS.md records). Times, MFU and tokens/s come from
XLA's cost model: estimates, never measurements. Needs `pip install -e ".[tpu]"`.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

from jaxsink.aot import ProgramReport, estimated_seconds

FSDP = ("--config.mesh.data=1", "--config.mesh.fsdp=-1")
STEPS = ("--programs=train,stats",)
# name: (config, topology, extra arguments), in the order they run
CASES = {
    "paper_7b@v5p-256": ("paper_7b", "v5p-256", ()),
    "paper_7b-64L@v5p-256": ("paper_7b", "v5p-256", ("--config.model.n_layers=64", "--programs=train")),
    "paper_7b@v4-64": ("paper_7b", "v4-64", STEPS),
    "paper_7b@v4-128": ("paper_7b", "v4-128", STEPS),
    "llama_1b@v5e-16": ("llama_1b", "v5e-16", (*FSDP, *STEPS)),
    "llama_1b@v6e-8": ("llama_1b", "v6e-8", (*FSDP, *STEPS)),
    "small@v5e-4": ("small", "v5e-4", STEPS),
}
GiB = 2 ** 30


def run_case(name: str, out: pathlib.Path) -> None:
    config, topology, extra = CASES[name]
    path = out / f"{name}.json"
    cmd = [sys.executable, "-m", "jaxsink.cli", "compile", "--config", config, "--topology", topology,
           "--json", str(path), *extra]
    print("$", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    tic = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    print(done.stderr[-3000:], file=sys.stderr)
    if path.exists():
        result = json.loads(path.read_text())
        result.update(case=name, command="jaxsink " + " ".join(cmd[3:-2] + list(extra)),
                      wall_seconds=time.perf_counter() - tic, exit_status=done.returncode)
        path.write_text(json.dumps(result, indent=2))


def table(out: pathlib.Path) -> str:
    rows = ["| case | program | HBM/chip GiB (args + temp + out) | of GiB | TFLOP/chip | est. step s | "
            "est. MFU | est. tok/s/chip | compile s | kernels |", "|" + "---|" * 10]
    notes = []
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        for p in r["programs"]:
            if p["error"]:
                rows.append(f"| {r.get('case', path.stem)} | {p['name']} | does not fit: {p['error']} | | | | | | "
                            f"{p['compile_seconds']:.0f} | |")
                continue
            train = p["name"] == "train_step"
            mem = (f"{p['total_bytes'] / GiB:.1f} ({p['argument_bytes'] / GiB:.1f} + {p['temp_bytes'] / GiB:.1f} + "
                   f"{p['output_bytes'] / GiB:.1f})")
            kernels = ", ".join(f"{k} x{n}" for k, n in p.get("custom_calls", {}).items())
            mfu = f"{100 * r['estimated_mfu']:.1f}%" if train and r["estimated_mfu"] else ""
            tok = f"{r['estimated_tokens_per_s_per_chip']:,.0f}" if train and r["estimated_mfu"] else ""
            one_layer = "counted once" in p.get("cost_basis", "")
            report = ProgramReport(**{k: v for k, v in p.items() if k != "total_bytes"})
            step = "n/a" if r.get("estimate_note") or one_layer else \
                f"{estimated_seconds(report, r['peak_flops_per_chip']):.3f}"
            rows.append(f"| {r.get('case', path.stem)} | {p['name']} | {mem} | {r['hbm_per_chip_bytes'] / GiB:.0f} | "
                        f"{p['flops'] / 1e12:.1f} | {step} | {mfu} | {tok} | "
                        f"{p['compile_seconds']:.0f} | {kernels} |")
        if r.get("estimate_note"):
            notes.append(f"- {r.get('case', path.stem)}: no estimate: {r['estimate_note']}")
    return "\n".join(rows + [""] + notes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=sorted(CASES))
    p.add_argument("--out", default="benchmarks/compile_results")
    p.add_argument("--table", action="store_true", help="only print the table of the JSON files already in --out")
    args = p.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        for name in args.only or CASES:
            run_case(name, out)
    print(table(out))


if __name__ == "__main__":
    main()
