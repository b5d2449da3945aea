"""Where a training step's time goes, by component, jaxsink beside the PyTorch reference (issue 18).

    python benchmarks/profile_step.py [--config tiny] [--dtype float32] [--steps 10] [--reps 15]
        [--paths accelerator | key=value,...] [--out F]

(a) In context: jaxsink's jitted training step (`make_train_step`: forward, backward, clipping, AdamW) is
traced with `jax.profiler`; every XLA op's time (summed over the CPU threads that ran it) is attributed to the
model code that produced it, through the source locations XLA keeps in the compiled HLO (the innermost jaxsink
frame of each op; backward ops carry their forward op's location): attention core (softmax(q k^T) v), RoPE,
attention projections, norms, FFN, embedding + head, loss, residual adds, optimizer (global norm, clipping,
AdamW, the non-finite guard). Thread time, so the sum exceeds the step's wall time when both cores work.
(b) In isolation, both frameworks in this one process, timed interleaved rep by rep (same contention): forward +
backward of each component at the step's shapes, through jaxsink's own functions (its per-backend paths,
`jaxsink.model.cpu_paths`) and through `torch_reference`'s modules: attention core (jaxsink's path vs torch
SDPA), RMSNorm, the SwiGLU FFN with its weight gradients, embedding + final norm + head + cross-entropy, the
optimizer update (clip + AdamW) and the whole step. torch: `--threads` intra-op threads, OMP_WAIT_POLICY=PASSIVE
(set here unless given).
`--paths accelerator` profiles jaxsink with the GPU/TPU paths forced on CPU (the "before" of issue 18);
`--paths key=value,...` changes single entries (`torch_reference.path_table`).
Prints two tables (with the load average) and writes JSON (--out).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# (component, rule): the first rule that matches the innermost jaxsink frame (function name, source line) wins
COMPONENTS = [
    ("attention core", lambda fn, src: fn in ("causal_attention", "attention_probs", "_mix_values", "visible_mask",
                                                "_explicit") or "dot_product_attention" in src),
    ("attention RoPE", lambda fn, src: fn in ("rope", "llama3_inv_freq")),
    ("attention projections", lambda fn, src: fn.startswith("Attention.")),
    ("norms", lambda fn, src: fn in ("rms_normalize", "Norm.__call__")),
    ("FFN", lambda fn, src: fn.split(".")[0] in ("SwiGLU", "GeluMLP", "LinearFFN")),
    ("embedding + head", lambda fn, src: fn == "Transformer.__call__"),
    ("loss", lambda fn, src: fn == "token_nll" or fn.endswith(".loss_fn")),
    ("residual adds", lambda fn, src: fn == "Block.__call__"),
    ("optimizer (norm, clip, AdamW)", lambda fn, src: ".step" in fn or "optax" in src),
]
SKIP_FUNCTIONS = ("dense",)        # jaxsink.model.cpu_paths.dense: attribute to its caller


# ------------------------------------------------------------------ (a) in-context attribution from the HLO

def _table(text: str, name: str) -> dict[int, str]:
    m = re.search(rf"^{name}\n(.*?)(?:\n\n|\Z)", text, re.S | re.M)
    rows = (line.split(" ", 1) for line in m.group(1).splitlines()) if m else ()
    return {int(i): rest for i, rest in rows}


def frame_chains(text: str) -> dict[int, list[tuple[str, str, int]]]:
    """stack_frame_id -> [(file, function, line)], innermost first, from the compiled HLO's tables (as printed
    by XLA, a frame's `parent_frame_id=P` is row P - 1 of the table; 0: no parent)."""
    files = {i: s.strip('"') for i, s in _table(text, "FileNames").items()}
    funcs = {i: s.strip('"') for i, s in _table(text, "FunctionNames").items()}
    locs = {i: tuple(int(x) for x in re.findall(r"(?:file_name_id|function_name_id|line)=(\d+)", s)[:3])
            for i, s in _table(text, "FileLocations").items()}
    frames = {i: tuple(int(x) for x in re.findall(r"=(\d+)", s)) for i, s in _table(text, "StackFrames").items()}
    chains = {}
    for fid in frames:
        chain, seen, cur = [], set(), fid
        while cur in frames and cur not in seen:
            seen.add(cur)
            loc_id, parent = frames[cur]
            f, fn, line = locs[loc_id]
            chain.append((files[f], funcs[fn], line))
            cur = parent - 1
        chains[fid] = chain
    return chains


def _source_line(path: str, line: int, cache={}) -> str:
    if path not in cache:
        try:
            with open(path) as f:
                cache[path] = f.read().splitlines()
        except OSError:
            cache[path] = []
    lines = cache[path]
    return lines[line - 1] if 0 < line <= len(lines) else ""


def classify(chain) -> str:
    for path, fn, line in chain:
        if "jaxsink" not in path and "optax" not in path:
            continue
        if fn in SKIP_FUNCTIONS:
            continue
        src = "optax" if "optax" in path else _source_line(path, line)
        for name, rule in COMPONENTS:
            if rule(fn, src):
                return name
    return "other (copies, layout, glue)"


def op_components(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> component, for every instruction with source metadata."""
    chains = frame_chains(hlo_text)
    out = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%(\S+) = .*?stack_frame_id=(\d+)", hlo_text, re.M):
        out[m.group(1)] = classify(chains.get(int(m.group(2)), []))
    return out


def traced_op_times(fn, args_fn, steps: int) -> tuple[dict[str, float], float]:
    """Thread time per XLA op name (ms per step) over `steps` traced calls, and the wall time per step."""
    import jax
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        t0 = time.perf_counter()
        for _ in range(steps):
            jax.block_until_ready(fn(*args_fn()))
        wall = (time.perf_counter() - t0) / steps
        jax.profiler.stop_trace()
        data = jax.profiler.ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0])
        per_op = collections.Counter()
        for plane in data.planes:
            for line in plane.lines:
                if "XLAEigen" not in line.name:
                    continue
                for ev in line.events:
                    if not ev.name.startswith("ThunkExecutor"):
                        per_op[ev.name] += ev.duration_ns / 1e6 / steps
    return dict(per_op), wall


def in_context(cfg, steps: int) -> dict:
    """jaxsink's whole jitted train step, its op times attributed to components."""
    import jax
    from jaxsink.train.step import make_train_step
    from torch_reference import WORKDIR
    from jaxsink.train.setup import Run
    run = Run.create(cfg, WORKDIR, devices=jax.devices()[:1])
    state = run.init_state()
    step = jax.jit(make_train_step(run.graphdef, run.optimizer, cfg.train))
    batch = run.train_batch(0)
    compiled = step.lower(state, batch).compile()
    text = compiled.as_text()
    components = op_components(text)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    entry = text[text.index("\nENTRY"):]
    n_ops = len(re.findall(r"^\s+(?:ROOT )?%\S+ = ", entry.split("\n}\n")[0], re.M))
    for _ in range(2):
        jax.block_until_ready(compiled(state, batch))
    per_op, wall = traced_op_times(compiled, lambda: (state, batch), steps)
    totals = collections.Counter()
    for op, ms in per_op.items():
        totals[components.get(op, "other (copies, layout, glue)")] += ms
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:15]
    return {"wall_ms_per_step": wall * 1e3, "thread_ms_per_step": sum(per_op.values()),
            "xla_gflop": cost.get("flops", 0.0) / 1e9, "xla_bytes_accessed_mb": cost.get("bytes accessed", 0.0) / 1e6,
            "entry_ops": n_ops,
            "components_thread_ms": dict(totals.most_common()),
            "top_ops": [(op, components.get(op, "?"), ms) for op, ms in top]}


# ------------------------------------------------------------------ (b) components in isolation, both frameworks

def _jax_grad_fn(f, *args):
    """jit(grad of <f(*args), fixed random cotangent>) w.r.t. every argument that is floating point."""
    import jax
    import jax.numpy as jnp
    out = jax.eval_shape(f, *args)
    cot = jax.random.normal(jax.random.key(1), out.shape, out.dtype) if out.shape else None
    argnums = tuple(i for i, a in enumerate(args)
                    if all(jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(a)))

    def scalar(*a):
        y = f(*a)
        return jnp.sum(y * cot) if cot is not None else y
    fn = jax.jit(jax.grad(scalar, argnums=argnums))
    return lambda: jax.block_until_ready(fn(*args))


def _module_fn(module):
    """A pure function (state, *inputs) of an nnx module, run under `nnx.capture` (its sows stay inside)."""
    from flax import nnx
    graphdef, state = nnx.split(module)
    return (lambda st, *xs: nnx.capture(nnx.merge(graphdef, st))(*xs)), state


def jax_components(cfg, spec) -> dict:
    """jaxsink's own functions (per-backend paths) at the step's shapes: name -> a timed callable."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jaxsink.model import cpu_paths
    from jaxsink.model.layers import Norm, SwiGLU
    from jaxsink.train.step import token_nll
    dt = spec.compute_dtype
    b, t, d = cfg.train.batch_size, cfg.train.seq_len, spec.d_model
    keys = iter(jax.random.split(jax.random.key(0), 8))
    x = jax.random.normal(next(keys), (b, t, d), dt)
    q, k, v = (jax.random.normal(next(keys), (b, t, spec.n_heads, spec.d_head), dt) for _ in range(3))
    core = (cpu_paths.causal_attention if cpu_paths.paths()["attention"] == "explicit"
            else lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True))
    norm_fn, norm_state = _module_fn(Norm("rmsnorm", d, spec.norm_eps))
    ffn_fn, ffn_state = _module_fn(SwiGLU(spec, nnx.Rngs(0)))
    tokens = jax.random.randint(next(keys), (b, t), 0, spec.vocab_size)
    embed = 0.02 * jax.random.normal(next(keys), (spec.vocab_size, d))
    head = 0.02 * jax.random.normal(next(keys), (d, spec.vocab_size))

    def embed_head_loss(embed, st, head, tokens):
        h = jnp.take(embed, tokens, axis=0).astype(dt)
        logits = cpu_paths.dense(norm_fn(st, h), head.astype(dt)).astype(jnp.float32)
        return jnp.mean(token_nll(logits, tokens))
    return {"attention core": _jax_grad_fn(core, q, k, v),
            "RMSNorm": _jax_grad_fn(norm_fn, norm_state, x),
            "SwiGLU FFN": _jax_grad_fn(lambda st, x: ffn_fn(st, x, {}), ffn_state, x),
            "embedding + final norm + head + loss": _jax_grad_fn(embed_head_loss, embed, norm_state, head, tokens)}


def jax_optimizer_and_step(cfg, path_spec: str) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from torch_reference import JaxStepper
    stepper = JaxStepper(cfg, path_spec)
    params, opt_state = jax.tree.map(jnp.copy, (stepper.state["params"], stepper.state["opt_state"]))
    grads = jax.tree.map(lambda p: 1e-3 * jax.random.normal(jax.random.key(2), p.shape, p.dtype), params)

    @jax.jit
    def update(grads, opt_state, params):
        updates, opt_state = stepper.run.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state
    batch = stepper.batch(0)
    return {"optimizer (clip + AdamW)": lambda: jax.block_until_ready(update(grads, opt_state, params)),
            "whole step": lambda: stepper.step(batch)}


def torch_components(cfg, spec, tokenizer, splits, dtype: str) -> dict:
    """The same components through torch_reference's modules (autocast for bfloat16)."""
    import contextlib
    import torch
    import torch.nn.functional as F
    from torch_reference import RMSNorm, SwiGLU, TorchStepper
    b, t, d = cfg.train.batch_size, cfg.train.seq_len, spec.d_model
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bfloat16" else contextlib.nullcontext
    gen = torch.Generator().manual_seed(0)
    rnd = lambda *shape: torch.randn(*shape, generator=gen, requires_grad=True)  # noqa: E731
    x, (q, k, v) = rnd(b, t, d), (rnd(b, spec.n_heads, t, spec.d_head) for _ in range(3))
    norm, ffn = RMSNorm(d, spec.norm_eps), SwiGLU(spec)
    with torch.no_grad():
        for p in ffn.parameters():
            p.normal_(0.0, 0.02)
    embed, head = (torch.nn.Parameter(0.02 * torch.randn(*s, generator=gen)) for s in
                   ((spec.vocab_size, d), (d, spec.vocab_size)))
    tokens = torch.randint(0, spec.vocab_size, (b, t), generator=gen)

    def timed(f, *inputs):
        def run():
            with cast():
                y = f()
            (y if y.ndim == 0 else (y.float() * cot[y.shape]).sum()).backward()
            for a in inputs:
                a.grad = None
        return run
    cot = {s: torch.randn(*s, generator=gen) for s in ((b, t, d), (b, spec.n_heads, t, spec.d_head))}
    stepper = TorchStepper(cfg, spec, tokenizer, splits, dtype, compiled=False)
    params = stepper.trainer.params
    for p in params:
        p.grad = 1e-3 * torch.randn(p.shape, generator=gen)
    batch = stepper.batch(0)

    def opt_step():
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        stepper.trainer.opt.step()
    return {"attention core": timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), q, k, v),
            "RMSNorm": timed(lambda: norm(x), x, *norm.parameters()),
            "SwiGLU FFN": timed(lambda: ffn(x, None, None), x, *ffn.parameters()),
            "embedding + final norm + head + loss": timed(
                lambda: F.cross_entropy((norm(F.embedding(tokens, embed)) @ head).float().reshape(-1, spec.vocab_size),
                                        tokens.reshape(-1)), embed, head, *norm.parameters()),
            "optimizer (clip + AdamW)": opt_step,
            "whole step": lambda: stepper.step(batch)}


def interleaved(pairs: dict, reps: int) -> dict:
    """name -> {"jaxsink": fn, "torch": fn}: warm each up, then time rep by rep, alternating (median, min, max)."""
    times = {name: {side: [] for side in fns} for name, fns in pairs.items()}
    for fns in pairs.values():
        for fn in fns.values():
            fn(), fn()
    for i in range(reps):
        for name, fns in pairs.items():
            for side in (list(fns) if i % 2 == 0 else list(fns)[::-1]):
                t0 = time.perf_counter()
                fns[side]()
                times[name][side].append(time.perf_counter() - t0)
    return {name: {side: {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts), "max_ms": 1e3 * max(ts)}
                   for side, ts in sides.items()} for name, sides in times.items()}


# ------------------------------------------------------------------ main

def main() -> None:
    from jaxsink import cpu_setup       # as the `jaxsink` command does (before JAX starts its threads)
    cpu_setup.prepare()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=10, help="traced steps for the in-context attribution")
    p.add_argument("--reps", type=int, default=15, help="interleaved repetitions of each isolated component")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument("--corpus", default="shakespeare")
    p.add_argument("--override", nargs="*", default=[])
    p.add_argument("--paths", default="", help="'accelerator' or 'key=value,...' (torch_reference.path_table)")
    p.add_argument("--out", default="")
    args = p.parse_args()
    import torch
    from jaxsink.model import cpu_paths
    from torch_reference import path_table, setup
    torch.set_num_threads(args.threads)
    cpu_paths.BACKEND_PATHS["cpu"] = path_table(args.paths)
    cfg, spec, tokenizer, splits = setup(args)
    result = {"config": args.config, "dtype": args.dtype, "paths": cpu_paths.paths(),
              "load_average_before": os.getloadavg()}
    print(f"{args.config} {args.dtype}, jaxsink paths {cpu_paths.paths()}; load average {os.getloadavg()}",
          flush=True)
    result["in_context"] = ctx = in_context(cfg, args.steps)
    print(f"\nXLA cost analysis of the step: {ctx['xla_gflop']:.2f} GFLOP, {ctx['xla_bytes_accessed_mb']:.0f} MB "
          f"accessed, {ctx['entry_ops']} ops in the entry computation")
    print(f"\n(a) jaxsink's whole step in context: {ctx['wall_ms_per_step']:.1f} ms wall per traced step, "
          f"{ctx['thread_ms_per_step']:.1f} ms thread time\n\n| component | thread ms per step | share |\n"
          "|---|---|---|")
    for name, ms in ctx["components_thread_ms"].items():
        print(f"| {name} | {ms:.1f} | {100 * ms / ctx['thread_ms_per_step']:.0f}% |")
    print("\ntop ops: " + "; ".join(f"{op} ({c}) {ms:.1f}" for op, c, ms in ctx["top_ops"]), flush=True)
    jax_fns = {**jax_components(cfg, spec), **jax_optimizer_and_step(cfg, args.paths)}
    torch_fns = torch_components(cfg, spec, tokenizer, splits, args.dtype)
    result["isolated"] = iso = interleaved({n: {"jaxsink": jax_fns[n], "torch eager": torch_fns[n]}
                                            for n in jax_fns}, args.reps)
    result["load_average_after"] = os.getloadavg()
    print(f"\n(b) forward + backward in isolation, {args.reps} interleaved reps; load average after "
          f"{result['load_average_after']}\n\n| component | jaxsink ms (min-max) | torch eager ms (min-max) | "
          f"torch / jaxsink |\n|---|---|---|---|")
    for name, r in iso.items():
        j, t = r["jaxsink"], r["torch eager"]
        print(f"| {name} | {j['median_ms']:.1f} ({j['min_ms']:.1f}-{j['max_ms']:.1f}) | {t['median_ms']:.1f} "
              f"({t['min_ms']:.1f}-{t['max_ms']:.1f}) | {t['median_ms'] / j['median_ms']:.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
