"""Fuzz whole run configs (model, train, mesh, stats, data): each drawn config either trains one step through
the real path (`Run.create`: validation, corpus, tokenizer, spec, mesh, shardings; then the jitted step, with
training-time statistics when `stats.every` is on) or is refused before compute with a one-line error naming
the key (or the corpus file). About one draw in eight has large shapes (widths 1024-4096, sequences of
1024-4096 tokens, up to 256 sequences a step): those are not trained but compiled through `jaxsink compile`'s
path (`jaxsink.aot`: validation, abstract spec, mesh and shardings, the lowered and XLA-compiled training step
for `--large-topology`: `cpu-4` by default, 3-6 s a draw; `v5e-4`, libtpu's abstract TPU devices whose HBM
limit is real, costs 60-100 CPU-seconds a draw), and either compile (within the chips' HBM) or are refused
with `DoesNotFit`'s one line naming the program and the topology.

    python benchmarks/fuzz_configs.py [--examples 500] [--seed 0] [--large-topology cpu-4] [--out fuzz.json]
    python benchmarks/fuzz_configs.py --large-only --large-topology v5e-4 --examples 24   # real HBM limits

Anything else (a traceback from inside JAX, a multi-line message, a non-finite loss of a valid config, a
refusal that names neither a drawn key nor the file) counts as a failure and is printed with its config.
`tests/test_fuzz_configs.py` runs a fixed (derandomised) subset of the same strategy.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# correctness, not speed: XLA's cheapest CPU code generation (compilation is most of the time per example)
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")

from hypothesis import strategies as st  # noqa: E402

DEVICES = 4   # the fuzzed mesh is laid over this many CPU devices

TEXT = "The quick brown fox jumps over the lazy dog. Now is the winter of our discontent.\n" * 40

# values each key accepts alone (combinations may still be impossible: odd d_head with RoPE, heads vs kv
# heads, a mesh that does not divide the devices or the micro-batch, seq_len > max_seq_len, BPE on a tiny corpus)
VALID = {
    "model.norm_placement": st.sampled_from(["pre", "post", "sandwich", "sandwich_qk", "none"]),
    "model.norm_type": st.sampled_from(["rmsnorm", "layernorm", "dyt"]),
    "model.ffn": st.sampled_from(["swiglu", "gelu", "linear", "attention"]),
    "model.attention": st.sampled_from(["softmax", "sink_logit", "softmax1", "sigmoid", "k_bias", "kv_bias"]),
    "model.gate": st.sampled_from(["none", "cond_channel", "cond_head", "cond_single", "uncond_channel",
                                   "uncond_head", "uncond_single", "static_position", "static_token"]),
    "model.position": st.sampled_from(["rope", "nope", "learned", "alibi"]),
    "model.qk_norm": st.booleans(),
    "model.qk_norm_scope": st.sampled_from(["head", "full"]),
    "model.n_layers": st.sampled_from([1, 2]),
    "model.d_model": st.sampled_from([8, 12, 16]),
    "model.n_heads": st.sampled_from([1, 2, 4]),
    "model.n_kv_heads": st.sampled_from([0, 1, 2, 3]),
    "model.d_head": st.sampled_from([2, 4, 5, 8]),
    "model.d_ff": st.sampled_from([8, 24]),
    "model.sliding_window": st.sampled_from([0, 3]),
    "model.max_seq_len": st.sampled_from([8, 16]),
    "model.tie_embeddings": st.booleans(),
    "model.qkv_bias": st.booleans(),
    "model.dtype": st.sampled_from(["float32", "bfloat16"]),
    "model.remat": st.sampled_from(["none", "full", "dots", "dots_no_batch"]),
    "model.scan_layers": st.booleans(),
    "model.fused_attention": st.booleans(),
    "model.rope_scaling": st.sampled_from([(), (8.0, 1.0, 4.0, 8)]),
    "model.vocab_size": st.sampled_from([0, 264, 100]),
    "train.seq_len": st.sampled_from([8, 16]),
    "train.batch_size": st.sampled_from([4, 6, 8]),
    "train.grad_accum": st.sampled_from([1, 2]),
    "train.loss_start": st.sampled_from([0, 2, 12]),
    "train.loss_end": st.sampled_from([0, 6, 12]),
    "train.grad_clip": st.sampled_from([1.0, 0.0]),
    "train.warmup_steps": st.sampled_from([0, 1]),
    "train.nan_policy": st.sampled_from(["stop", "skip"]),
    "stats.every": st.sampled_from([0, 1]),
    "stats.sink_seq_len": st.sampled_from([64, 4]),
    "mesh.data": st.sampled_from([-1, 1, 2, 3]),
    "mesh.fsdp": st.sampled_from([1, 2, 4]),
    "mesh.tensor": st.sampled_from([1, 2, 3]),
    "mesh.rules.embed": st.sampled_from(["fsdp", "tensor", ""]),
    "mesh.rules.batch": st.sampled_from(["data,fsdp", "data"]),
    "data.tokenizer": st.sampled_from(["byte", "byte", "byte", "bpe"]),
    "data.heldout_fraction": st.sampled_from([0.05, 0.2]),
}
# values no config may hold (one of them, or none, per draw: about half the draws hold one)
INVALID = [
    ("model.norm_placement", "middle"), ("model.norm_type", "batchnorm"), ("model.ffn", "moe"),
    ("model.attention", "linear"), ("model.gate", "always"), ("model.position", "rotary"),
    ("model.qk_norm_scope", "none"), ("model.n_layers", 0), ("model.d_model", 0), ("model.n_heads", 0),
    ("model.n_kv_heads", -1), ("model.d_head", 0), ("model.d_ff", -4), ("model.sliding_window", -1),
    ("model.max_seq_len", 4), ("model.dtype", "float16"), ("model.remat", "everything"),
    ("model.rope_scaling", (2.0,)), ("model.norm_eps", 0.0), ("model.init_std", -0.02), ("model.rope_theta", 0.0),
    ("train.seq_len", 0), ("train.batch_size", 0), ("train.grad_accum", 0), ("train.loss_start", 20),
    ("train.loss_end", 30), ("train.loss_end", -1), ("train.lr", 0.0), ("train.lr", -1.0), ("train.b1", 1.0),
    ("train.b2", 1.0), ("train.grad_clip", -1.0), ("train.min_lr_ratio", 1.5), ("train.warmup_steps", -2),
    ("train.weight_decay", -0.1), ("train.keep_checkpoints", 0), ("train.steps", 0), ("train.log_every", 0),
    ("train.nan_policy", "ignore"), ("stats.every", -1), ("stats.sink_eps", 0.0), ("stats.sink_eps", 1.2),
    ("stats.sink_seq_len", 1), ("mesh.data", 0), ("mesh.fsdp", 0), ("mesh.tensor", 0),
    ("mesh.rules.embed", "pipeline"), ("data.tokenizer", "sentencepiece"), ("data.bpe_vocab_size", 100),
    ("data.heldout_fraction", 0.0), ("data.heldout_fraction", 1.0), ("data.corpus", "empty"),
    ("data.corpus", "missing"), ("data.corpus", "binary"), ("data.corpus", "short"),
]
# large shapes (about one draw in eight) replace the small ones: compiled for LARGE_TOPOLOGY, never trained
LARGE = st.fixed_dictionaries({
    "model.d_model": st.sampled_from([1024, 2048, 4096]), "model.n_heads": st.sampled_from([8, 16, 32]),
    "model.d_head": st.sampled_from([64, 128]), "model.d_ff": st.sampled_from([2816, 8192, 14336]),
    "model.n_layers": st.sampled_from([2, 4]), "model.max_seq_len": st.sampled_from([2048, 4096]),
    "train.seq_len": st.sampled_from([1024, 2048, 4096]), "train.batch_size": st.sampled_from([16, 64, 256]),
    "model.vocab_size": st.sampled_from([32000, 49152])}, optional={
    "model.n_kv_heads": st.sampled_from([0, 4, 8]), "model.dtype": st.sampled_from(["float32", "bfloat16"])})


def strategy(large):
    return st.builds(lambda valid, big, bad: {**valid, **(big or {}), **dict([bad] if bad else [])},
                     st.fixed_dictionaries({}, optional=VALID), large,
                     st.one_of(st.sampled_from(INVALID), st.none()))


STRATEGY = strategy(st.one_of(st.none(), st.none(), st.none(), st.none(), st.none(), st.none(), st.none(), LARGE))
LARGE_ONLY = strategy(LARGE)   # `--large-only`: every draw large (a TPU topology's HBM limits, fewer draws)


def corpora(root) -> dict[str, str]:
    """The corpus kinds the fuzzer draws: a good one and four bad ones."""
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files = {"good": TEXT.encode(), "empty": b"", "binary": bytes(range(256)) * 8, "short": b"tiny text"}
    paths = {}
    for kind, data in files.items():
        (root / f"{kind}.txt").write_bytes(data)
        paths[kind] = str(root / f"{kind}.txt")
    paths["missing"] = str(root / "no_such_corpus.txt")
    return paths


def config_of(overrides: dict, paths: dict):
    """The config of one draw (ConfigError from a bad value is a refusal too)."""
    from jaxsink.config import base_config, set_value
    cfg = base_config()
    for key, value in {"model.d_model": 16, "model.d_head": 4, "model.d_ff": 24, "model.n_layers": 1,
                       "model.max_seq_len": 16, "train.seq_len": 8, "train.batch_size": 8, "train.steps": 1,
                       "data.bpe_vocab_size": 300, "data.corpus": "good", **overrides}.items():
        set_value(cfg, key, paths[value] if key == "data.corpus" else value)
    return cfg


def is_large(overrides: dict) -> bool:
    return overrides.get("model.d_model", 0) >= 1024 and overrides.get("train.seq_len", 0) >= 1024


LARGE_TOPOLOGY = [f"cpu-{DEVICES}"]   # `--large-topology` (v5e-4: TPU HBM limits, about 20x the CPU time)


def large_topology():
    from jaxsink import topology
    return topology.parse_topology(LARGE_TOPOLOGY[0])


def compile_large(overrides: dict, paths: dict) -> tuple[str, str]:
    """`jaxsink compile`'s path for a large draw: ('compiled', 'GiB per chip') or ('refused', message)."""
    from jaxsink import aot
    from jaxsink import topology as topo_lib
    from jaxsink.cli import _user_errors
    try:
        cfg = config_of(overrides, paths)
        topology = large_topology()
        run, reports = aot.compile_all(cfg, topo_lib.devices(topology), programs=("train",), estimate=False)
        summary = aot.summarize("fuzz", topology, run, reports)
        aot.check_fits(summary)
    except _user_errors() as e:
        return "refused", str(e)
    return "compiled", f"{reports[0].total_bytes / aot.GiB:.2f} GiB per chip on {topology.name}"


def one(overrides: dict, paths: dict, workdir) -> tuple[str, str]:
    """('trained', loss), ('compiled', memory) or ('refused', message); any other outcome raises."""
    import jax
    from jaxsink.cli import _user_errors
    from jaxsink.train.loop import compile_steps
    from jaxsink.train.setup import Run
    from jaxsink.train.stats import training_stats
    if is_large(overrides):
        return compile_large(overrides, paths)
    try:
        cfg = config_of(overrides, paths)
        run = Run.create(cfg, workdir, jax.devices()[:DEVICES])
    except _user_errors() as e:
        return "refused", str(e)
    stats = training_stats(cfg) if cfg.stats.every else None
    steps = compile_steps(run, stats)
    state = run.init_state()
    with jax.set_mesh(run.mesh):
        _, m = steps[stats is not None](state, run.train_batch(0))
    loss = float(m["loss"])
    if not math.isfinite(loss):
        raise AssertionError(f"a valid config trained to a non-finite loss {loss}")
    return "trained", f"{loss:.4f}"


def names_the_problem(message: str, overrides: dict, paths: dict) -> bool:
    """A refusal names a drawn key (dotted, or its last part), the mesh, or the corpus file; a large draw may
    instead not fit (`DoesNotFit`: the program and the topology)."""
    if is_large(overrides) and " does not fit " in message:
        return True
    names = [*overrides, "mesh", "data.corpus", "model.", "train."]
    return any(k in message for k in names) or any(k.split(".")[-1] in message for k in overrides) or \
        any(p in message for p in paths.values())


def check(overrides: dict, paths: dict, workdir) -> tuple[str, str]:
    outcome, detail = one(overrides, paths, workdir)
    if outcome == "refused":
        assert "\n" not in detail, f"multi-line refusal: {detail!r}"
        assert names_the_problem(detail, overrides, paths), f"refusal names no key: {detail!r}"
    return outcome, detail


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    p.add_argument("--log", help="append one JSON line per example here (partial results survive)")
    p.add_argument("--large-topology", default=LARGE_TOPOLOGY[0], help="compile the large draws for this topology")
    p.add_argument("--large-only", action="store_true", help="every draw large (e.g. with --large-topology v5e-4)")
    args = p.parse_args()
    LARGE_TOPOLOGY[0] = args.large_topology
    import jax
    jax.config.update("jax_num_cpu_devices", DEVICES)
    from hypothesis import HealthCheck, given, seed, settings
    root = pathlib.Path(tempfile.mkdtemp(prefix="jaxsink-fuzz-"))
    paths = corpora(root / "corpora")
    counts = {"trained": 0, "compiled": 0, "refused": 0}
    failures, refusals = [], {}
    t0 = time.time()

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(LARGE_ONLY if args.large_only else STRATEGY)
    def fuzz(overrides):
        workdir = root / f"w{sum(counts.values()) + len(failures)}"
        try:
            outcome, detail = check(overrides, paths, workdir)
        except Exception as e:  # noqa: BLE001 -- a failure is what this counts
            failures.append({"overrides": overrides, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            print(json.dumps(failures[-1], default=str), file=sys.stderr)
            if args.log:
                with open(args.log, "a") as f:
                    f.write(json.dumps({"outcome": "failure", **failures[-1]}, default=str) + "\n")
            return
        counts[outcome] += 1
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps({"outcome": outcome, "detail": detail, "overrides": overrides}, default=str) + "\n")
        if outcome == "refused":
            key = detail.split(":")[0][:60]
            refusals[key] = refusals.get(key, 0) + 1
    fuzz()
    result = {"examples": sum(counts.values()) + len(failures), **counts, "failures": len(failures),
              "seed": args.seed, "large_topology": args.large_topology, "wall_s": round(time.time() - t0, 1),
              "cpu_s": round(time.process_time(), 1), "load_average": os.getloadavg(),
              "refusals_by_first_word": refusals, "failure_details": failures}
    print(json.dumps(result, indent=2, default=str))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
