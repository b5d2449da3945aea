"""jaxsink's training step against a PyTorch reference of the same model and step (eager and torch.compile).

    python benchmarks/torch_reference.py [--config tiny] [--steps 20] [--dtype float32] [--threads N]
        [--omp-wait-policy default PASSIVE] [--no-compile] [--no-check]
        [--paths-variants accelerator key=value,...] [--xla-flags 'FLAG=V ...' ...] [--out F]

The reference is written from jaxsink's code, not from a library model: decoder-only, pre-norm RMSNorm
(float32 statistics, eps from the spec), SwiGLU FFN, rotate-half RoPE (HF Llama convention, as
`jaxsink.model.layers.rope`), causal softmax attention through `F.scaled_dot_product_attention`, final norm,
untied head, no biases; the parameters have jaxsink's shapes and names (`blocks.0.mixer.wq` [d, H, d_head]...),
GPT-2 style init (out projections std / sqrt(2L)). Step: mean token cross-entropy in float32, global-norm
clipping, AdamW with jaxsink's decay mask (`jaxsink.train.optim.decay_mask`: norms and embeddings not
decayed unless the config asks) and its warmup-cosine learning rate; float32 parameters, bfloat16 through
`torch.autocast("cpu")`. Both sides train on the same batches (`jaxsink.data.train_batch`, seed, step).

Timed in one invocation, each in its own process: jaxsink's jitted step (`make_train_step`, state donated, one
CPU device), torch eager and torch.compile (default mode; a failure is reported, not raised), the torch pair once
per `--omp-wait-policy` (torch's OpenMP threads spin-wait by default, which collapses on cores shared with other
jobs; PASSIVE makes them sleep). All processes are built and warmed up first, then step i runs in each in turn,
the order rotating, so every run sees the same contention on a shared machine. torch uses `--threads` intra-op
threads (default: every core); XLA's CPU client runs one intra-op pool with one thread per core it may use (not
settable per run). Then a correctness check in this process (float32): parameter counts (torch vs
`count_params`), and the losses of 3 steps from jaxsink's own initial parameters (warmup off so the optimizer
acts from step 0). Model FLOPs per token are `train_throughput.model_flops_per_token`.
Each step's CPU time (all threads of its process) is recorded beside its wall time: on cores shared with other
jobs it measures the work rather than the wait. More jaxsink workers on request, timed in the same interleave:
`--paths-variants accelerator` (the GPU/TPU compute paths forced on CPU: jaxsink before issue 18) or
`key=value,...` (single entries of `jaxsink.model.cpu_paths`), `--xla-flags` (one worker per XLA_FLAGS value).
Prints a table and writes JSON (--out).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import pathlib
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from probe_vs_hooks import Worker, interleave, serve_requests   # the process line protocol (this folder)

WORKDIR = "/tmp/jaxsink-bench-unused"       # the one train_throughput's worker uses (a BPE tokenizer is kept there)
SUPPORTED = dict(norm_placement="pre", norm_type="rmsnorm", ffn="swiglu", attention="softmax", gate="none",
                 position="rope", qk_norm=False, qkv_bias=False, tie_embeddings=False, sliding_window=0,
                 rope_scaling=())


# ------------------------------------------------------------------ the reference model

class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.scale).to(x.dtype)


def rope_tables(seq_len: int, d_head: int, theta: float):
    inv_freq = theta ** (-torch.arange(0, d_head // 2, dtype=torch.float32) * 2.0 / d_head)
    angle = torch.arange(seq_len, dtype=torch.float32)[:, None] * inv_freq[None, :]        # [T, d/2]
    return torch.cos(angle)[None, :, None, :], torch.sin(angle)[None, :, None, :]


def rope(x, cos, sin):
    """Rotate-half: the first and second halves of each head are the pair (jaxsink's and HF Llama's)."""
    x32 = x.float()
    half = x.shape[-1] // 2
    x1, x2 = x32[..., :half], x32[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, spec):
        super().__init__()
        d, h, dh = spec.d_model, spec.n_heads, spec.d_head
        self.wq, self.wk, self.wv = (nn.Parameter(torch.empty(d, h, dh)) for _ in range(3))
        self.wo = nn.Parameter(torch.empty(h, dh, d))

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        _, h, dh = self.wq.shape
        q, k, v = (x @ w.reshape(d, h * dh) for w in (self.wq, self.wk, self.wv))
        q, k = rope(q.view(b, t, h, dh), cos, sin), rope(k.view(b, t, h, dh), cos, sin)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.view(b, t, h, dh).transpose(1, 2),
                                           is_causal=True)
        return y.transpose(1, 2).reshape(b, t, h * dh) @ self.wo.reshape(h * dh, d)


class SwiGLU(nn.Module):
    def __init__(self, spec):
        super().__init__()
        d, f = spec.d_model, spec.d_ff
        self.w_gate, self.w_up = nn.Parameter(torch.empty(d, f)), nn.Parameter(torch.empty(d, f))
        self.w_down = nn.Parameter(torch.empty(f, d))

    def forward(self, x, cos, sin):
        return (F.silu(x @ self.w_gate) * (x @ self.w_up)) @ self.w_down


class Block(nn.Module):
    """Paper block i (1-based): attention when i is odd, FFN when even; h + F(RMSNorm(h))."""

    def __init__(self, spec, index: int):
        super().__init__()
        self.norm_in = RMSNorm(spec.d_model, spec.norm_eps)
        self.mixer = Attention(spec) if index % 2 == 1 else SwiGLU(spec)

    def forward(self, h, cos, sin):
        return h + self.mixer(self.norm_in(h), cos, sin)


class Reference(nn.Module):
    def __init__(self, spec, seq_len: int):
        super().__init__()
        bad = {k: getattr(spec, k) for k, v in SUPPORTED.items() if getattr(spec, k) != v}
        if bad or spec.kv_heads != spec.n_heads:
            raise SystemExit(f"the torch reference covers the Llama-style baseline only; this config has {bad}")
        d, v = spec.d_model, spec.vocab_size
        self.embed = nn.Parameter(torch.empty(v, d))
        self.blocks = nn.ModuleList(Block(spec, i + 1) for i in range(spec.n_blocks))
        self.final_norm = RMSNorm(d, spec.norm_eps)
        self.head = nn.Parameter(torch.empty(d, v))
        cos, sin = rope_tables(seq_len, spec.d_head, spec.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        out_std = spec.init_std / math.sqrt(2 * spec.n_layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if not name.endswith("scale"):
                    p.normal_(0.0, out_std if name.rsplit(".", 1)[-1] in ("wo", "w_down") else spec.init_std)

    def forward(self, tokens, targets):
        t = tokens.shape[1]
        cos, sin = self.cos[:, :t], self.sin[:, :t]
        h = F.embedding(tokens, self.embed)
        for block in self.blocks:
            h = block(h, cos, sin)
        logits = (self.final_norm(h) @ self.head).float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def nested(named: dict) -> dict:
    """`blocks.0.mixer.wq` -> {"blocks": {0: {"mixer": {"wq": ...}}}}: jaxsink's parameter-dict layout."""
    out: dict = {}
    for name, value in named.items():
        *parents, leaf = [int(p) if p.isdigit() else p for p in name.split(".")]
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def lr_at(t, step: int) -> float:
    """optax.warmup_cosine_decay_schedule as `jaxsink.train.optim.schedule` builds it."""
    warmup = min(t.warmup_steps, t.steps)
    if step < warmup:
        return t.lr * step / warmup
    decay = max(t.steps, warmup + 1) - warmup
    frac = min(step - warmup, decay) / decay
    alpha = t.min_lr_ratio
    return t.lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * frac)) + alpha)


def make_optimizer(model: Reference, t) -> torch.optim.Optimizer:
    """AdamW, decay mask from jaxsink's own `decay_mask` over the same names (fused CPU kernel if available)."""
    import jax
    from jaxsink.train.optim import decay_mask
    named = dict(model.named_parameters())
    names = nested({n: n for n in named})
    decayed = {n for n, on in zip(jax.tree.leaves(names), jax.tree.leaves(decay_mask(names, t))) if on}
    groups = [{"params": [p for n, p in named.items() if n in decayed], "weight_decay": t.weight_decay},
              {"params": [p for n, p in named.items() if n not in decayed], "weight_decay": 0.0}]
    for impl in ({"fused": True}, {"foreach": True}):
        try:
            opt = torch.optim.AdamW(groups, lr=t.lr, betas=(t.b1, t.b2), eps=t.eps, **impl)
            opt.impl = next(iter(impl))
            return opt
        except RuntimeError:
            continue
    raise RuntimeError("no AdamW implementation")


class TorchTrainer:
    """One training step: set the scheduled lr, forward (autocast for bfloat16), backward, clip, AdamW."""

    def __init__(self, model: Reference, t, dtype: str, compiled: bool):
        self.model, self.t = model, t
        self.opt = make_optimizer(model, t)
        self.params = list(model.parameters())
        self.loss = torch.compile(model) if compiled else model
        self.autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bfloat16" \
            else contextlib.nullcontext
        self.n = 0

    def step(self, inputs, targets) -> float:
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.t, self.n)
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.loss(inputs, targets)
        loss.backward()
        if self.t.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.t.grad_clip)
        self.opt.step()
        self.n += 1
        return float(loss.detach())


# ------------------------------------------------------------------ setup shared with jaxsink

def setup(args):
    """jaxsink's config, spec and training tokens (no JAX computation runs here)."""
    from jaxsink.config import apply_overrides, load_config
    from jaxsink.model import ModelSpec
    from jaxsink.workdir import load_data
    cfg = load_config(args.config, [f"model.dtype={args.dtype}", f"data.corpus={args.corpus}"])
    apply_overrides(cfg, args.override)
    tokenizer, splits = load_data(cfg, pathlib.Path(WORKDIR))
    return cfg, ModelSpec.from_config(cfg.model, tokenizer.vocab_size), tokenizer, splits


def batch(cfg, tokenizer, splits, step: int):
    """The batch jaxsink's `Run.train_batch(step)` builds (one micro-batch: grad_accum must be 1)."""
    from jaxsink.data import train_batch
    t = cfg.train
    inputs, targets = train_batch(splits.train, seed=t.seed, step=step, batch_size=t.batch_size, seq_len=t.seq_len,
                                  bos_id=tokenizer.bos_id)
    return torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(targets.astype(np.int64))


class TorchStepper:
    """A worker's model: the reference, eager or under torch.compile (default mode)."""

    def __init__(self, cfg, spec, tokenizer, splits, dtype: str, compiled: bool):
        torch.manual_seed(cfg.train.seed)
        self.data = (cfg, tokenizer, splits)
        self.model = Reference(spec, cfg.train.seq_len)
        self.trainer = TorchTrainer(self.model, cfg.train, dtype, compiled)
        self.info = {"optimizer": f"AdamW ({self.trainer.opt.impl})", "threads": torch.get_num_threads(),
                     "params": int(sum(p.numel() for p in self.model.parameters()))}

    def batch(self, step: int):
        return batch(*self.data, step)

    def step(self, b) -> float:
        return self.trainer.step(*b)


class JaxStepper:
    """jaxsink's own jitted training step (`make_train_step`, state donated), on one CPU device."""

    def __init__(self, cfg, paths: str = ""):
        import jax
        from jaxsink.model import cpu_paths
        from jaxsink.train.setup import Run
        cpu_paths.BACKEND_PATHS["cpu"] = path_table(paths)
        from jaxsink.train.step import make_train_step
        from train_throughput import model_flops_per_token
        self.jax, self.run = jax, Run.create(cfg, WORKDIR, devices=jax.devices())   # JAX_NUM_CPU_DEVICES of the worker
        self.state = self.run.init_state()
        self.fn = jax.jit(make_train_step(self.run.graphdef, self.run.optimizer, cfg.train), donate_argnums=0)
        self.info = {"threads": len(os.sched_getaffinity(0)), "jax_version": jax.__version__,
                     "params": self.run.n_params,
                     "model_flops_per_token": model_flops_per_token(self.run.spec, cfg.train.seq_len)}

    def batch(self, step: int):
        return self.run.train_batch(step)

    def step(self, b) -> float:
        self.state, metrics = self.fn(self.state, b)
        return float(self.jax.block_until_ready(metrics)["loss"])


def path_table(spec: str) -> dict:
    """jaxsink's CPU compute-path table (`jaxsink.model.cpu_paths`) as `spec` changes it: '' keeps it,
    'accelerator' takes the GPU/TPU table, 'key=value,...' overrides entries (values: true/false or a word)."""
    from jaxsink.model import cpu_paths
    if spec == "accelerator":
        return dict(cpu_paths.BACKEND_PATHS["tpu"])
    table = dict(cpu_paths.BACKEND_PATHS["cpu"])
    for item in filter(None, spec.split(",")):
        key, value = item.split("=")
        if key not in table:
            raise SystemExit(f"unknown compute path {key!r}; known: {sorted(table)}")
        table[key] = {"true": True, "false": False}.get(value.lower(), int(value) if value.isdigit() else value)
    return table


def serve(args) -> None:
    """A worker process: build and warm up (untimed; compilation happens here), then time one step per request."""
    if args.serve == "jaxsink":
        from jaxsink import cpu_setup       # as the `jaxsink` command does (opt-outs: jaxsink.cpu_setup)
        cpu_setup.prepare()
    cfg, spec, tokenizer, splits = setup(args)
    t0 = time.perf_counter()
    try:
        stepper = JaxStepper(cfg, args.paths) if args.serve == "jaxsink" else \
            TorchStepper(cfg, spec, tokenizer, splits, args.dtype, compiled=args.serve == "torch.compile")
        for _ in range(args.warmup):
            stepper.step(stepper.batch(0))
    except Exception as e:  # torch.compile failures surface here (inductor needs a working C++ compiler)
        print(json.dumps({"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"}), flush=True)
        return

    def handle(i: int) -> dict:
        b = stepper.batch(i)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = stepper.step(b)
        return {"t": time.perf_counter() - t0, "cpu": time.process_time() - c0, "loss": loss}

    serve_requests({"setup_and_warmup_s": time.perf_counter() - t0, **stepper.info}, handle)


def summary(times, cpu_times, cfg) -> dict:
    """Wall-clock figures, and the median CPU time (all threads) per step: on cores shared with other jobs it
    counts the work a step does rather than the time it waited for a core (load-robust, though spin-waiting
    threads count too)."""
    med = statistics.median(times)
    return {"step_s_median": med, "step_s_min": min(times), "step_s_max": max(times),
            "tokens_per_s": cfg.train.batch_size * cfg.train.seq_len / med,
            "cpu_s_median": statistics.median(cpu_times)}


def run_interleaved(args, cfg) -> dict:
    """Build and warm up every worker process, then time `args.steps` steps interleaved (`interleave`)."""
    jax_env = {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1"}
    plan = [("jaxsink jit", "jaxsink", jax_env)]
    plan += [(f"jaxsink jit, paths {v}", "jaxsink", jax_env, v) for v in args.paths_variants]
    for assignments in args.jax_env:
        extra = dict(a.split("=", 1) for a in assignments.split())
        plan.append((f"jaxsink jit, {assignments}", "jaxsink", {**jax_env, **extra}))
    for flags in args.xla_flags:
        flags = " ".join(f if f.startswith("--") else "--" + f for f in flags.split())
        plan.append((f"jaxsink jit, XLA_FLAGS={flags}", "jaxsink", {**jax_env, "XLA_FLAGS": flags}))
    for policy in args.omp_wait_policy:
        env = {} if policy == "default" else {"OMP_WAIT_POLICY": policy}
        suffix = "" if policy == "default" else f" (OMP_WAIT_POLICY={policy})"
        kinds = ("eager",) if args.no_compile else ("eager", "torch.compile")
        plan += [(("torch eager" if k == "eager" else k) + suffix, k, env) for k in kinds]
    workers = []
    for name, kind, env, *paths in plan:
        print(f"setting up {name} ...", flush=True)
        cmd = [sys.executable, __file__, "--serve", kind, "--paths", *(paths or [""]), "--config", args.config,
               "--dtype", args.dtype,
               "--warmup", str(args.warmup), "--threads", str(args.threads), "--corpus", args.corpus,
               "--override", *args.override]
        workers.append(Worker(name, cmd, env))
        if "error" in workers[-1].info:
            print(f"  {name} failed: {workers[-1].info['error']}", flush=True)
    interleave(workers, args.steps)
    return {w.name: {**w.info, "env": w.env, **(summary(w.times(), w.times("cpu"), cfg) if w.replies else {}),
                     "final_loss": w.replies[-1]["loss"] if w.replies else None} for w in workers}


# ------------------------------------------------------------------ correctness check (float32)

def check(cfg, spec, tokenizer, splits, steps: int = 3) -> dict:
    """Same initial parameters (jaxsink's init) and batches: the losses of `steps` training steps agree."""
    import jax
    import jax.numpy as jnp
    from jaxsink.config import set_value
    from jaxsink.model import build, count_params, split
    from jaxsink.train.optim import make_optimizer as jax_optimizer
    from jaxsink.train.step import make_train_step
    set_value(cfg, "model.dtype", "float32")
    set_value(cfg, "train.warmup_steps", 0)       # lr = peak from step 0, so AdamW, decay and clipping all act
    graphdef, params = split(build(dataclasses.replace(spec, dtype="float32"), cfg.train.seed))
    model = Reference(spec, cfg.train.seq_len)
    flat = {".".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
            for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    missing = set(flat) ^ set(dict(model.named_parameters()))
    if missing:
        raise SystemExit(f"parameter names differ between jaxsink and the reference: {sorted(missing)}")
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(np.array(flat[name])))
    trainer = TorchTrainer(model, cfg.train, "float32", compiled=False)
    opt = jax_optimizer(cfg.train, params)
    step = jax.jit(make_train_step(graphdef, opt, cfg.train))
    state = {"params": params, "opt_state": opt.init(params), "step": jnp.int32(0)}
    jax_losses, torch_losses = [], []
    for i in range(steps):
        x, y = batch(cfg, tokenizer, splits, i + 1)
        state, m = step(state, {"inputs": jnp.asarray(x.numpy()[None], jnp.int32),
                                "targets": jnp.asarray(y.numpy()[None], jnp.int32)})
        jax_losses.append(float(m["loss"]))
        torch_losses.append(trainer.step(x, y))
    final = {".".join(str(getattr(k, "key", k)) for k in path): np.asarray(v)
             for path, v in jax.tree_util.tree_flatten_with_path(state["params"])[0]}
    param_diff = max(float(np.abs(final[n] - p.detach().numpy()).max()) for n, p in model.named_parameters())
    return {"params_jaxsink": count_params(params), "params_torch": int(sum(p.numel() for p in model.parameters())),
            "loss_jaxsink": jax_losses, "loss_torch": torch_losses,
            "loss_max_abs_diff": max(abs(a - b) for a, b in zip(jax_losses, torch_losses)),
            "param_max_abs_diff_after": param_diff}


# ------------------------------------------------------------------ main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="tiny")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens in the first)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads (default: every core)")
    p.add_argument("--omp-wait-policy", nargs="+", default=["default", "PASSIVE"],
                   help="torch workers per OpenMP wait policy ('default': the environment's)")
    p.add_argument("--corpus", default="shakespeare")
    p.add_argument("--override", nargs="*", default=[], help="extra config overrides, e.g. train.batch_size=8")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--xla-flags", nargs="*", default=[],
                   help="one more jaxsink worker per value, run with that XLA_FLAGS (leading -- optional: "
                        "'xla_cpu_use_xnnpack=false')")
    p.add_argument("--jax-env", nargs="*", default=[],
                   help="one more jaxsink worker per value, with these environment variables set: "
                        "'MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296'")
    p.add_argument("--paths-variants", nargs="*", default=[],
                   help="one more jaxsink worker per value, with these compute paths on CPU (`path_table`): "
                        "'accelerator' (the GPU/TPU table: the paths before issue 18) or 'key=value,...'")
    p.add_argument("--paths", default="", help=argparse.SUPPRESS)
    p.add_argument("--no-check", action="store_true", help="skip the float32 equivalence check")
    p.add_argument("--out", default="")
    p.add_argument("--serve", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.serve.startswith("jaxsink"):
        torch.set_num_threads(args.threads)
    if args.serve:
        serve(args)
        return
    cfg, spec, tokenizer, splits = setup(args)
    if cfg.train.grad_accum != 1:
        raise SystemExit("the reference runs one micro-batch per step: use train.grad_accum=1")
    cores = len(os.sched_getaffinity(0))
    print(f"load average {os.getloadavg()}")
    print(f"{args.config} {args.dtype}: vocab {spec.vocab_size}, {spec.n_layers} layers x d_model {spec.d_model}, "
          f"batch {cfg.train.batch_size} x T {cfg.train.seq_len}; {args.steps} interleaved steps; torch "
          f"{torch.__version__} with {args.threads} intra-op threads; XLA: one CPU device, {cores} intra-op "
          f"threads (one per core, its default)", flush=True)
    result = {"config": args.config, "dtype": args.dtype, "steps": args.steps, "cores": cores,
              "torch_threads": args.threads, "xla_threads": cores, "torch_version": torch.__version__,
              "load_average_before": os.getloadavg()}
    result["runs"] = runs = run_interleaved(args, cfg)
    result["load_average_after"] = os.getloadavg()
    print(f"load average after: {result['load_average_after']}")
    jax_run = runs["jaxsink jit"]
    flops = jax_run.get("model_flops_per_token", 0.0)
    print(f"\n| run | tokens/s | step median (min-max) | model GFLOP/s | set-up + {args.warmup} warm-up steps "
          f"| jaxsink / this | CPU time per step | jaxsink / this, CPU time |\n|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        if "tokens_per_s" not in r:
            print(f"| {name} | failed: {r.get('error')} | | | | |")
            continue
        r["jaxsink_over_this"] = jax_run.get("tokens_per_s", math.nan) / r["tokens_per_s"]
        r["jaxsink_over_this_cpu"] = r["cpu_s_median"] / jax_run.get("cpu_s_median", math.nan)
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {r['step_s_median'] * 1e3:.1f} ms "
              f"({r['step_s_min'] * 1e3:.1f}-{r['step_s_max'] * 1e3:.1f}) | {flops * r['tokens_per_s'] / 1e9:.1f} | "
              f"{r['setup_and_warmup_s']:.1f} s | {r['jaxsink_over_this']:.2f} | {r['cpu_s_median'] * 1e3:.1f} ms | "
              f"{r['jaxsink_over_this_cpu']:.2f} |")
    if not args.no_check:
        result["check"] = c = check(cfg, spec, tokenizer, splits)
        print(f"\nparameters: torch {c['params_torch']:,}, jaxsink count_params {c['params_jaxsink']:,}")
        print(f"same init, 3 float32 steps: loss jaxsink {[round(x, 6) for x in c['loss_jaxsink']]}, "
              f"torch {[round(x, 6) for x in c['loss_torch']]}; max |diff| {c['loss_max_abs_diff']:.1e}, "
              f"parameters after: max |diff| {c['param_max_abs_diff_after']:.1e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
