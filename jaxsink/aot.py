"""`jaxsink compile`: ahead-of-time compilation of a config's programs for a named topology, from shapes only.

No data is read, no parameter is allocated and no tokenizer is trained (the vocabulary is the config's): the
training step (plain and with training-time statistics), the evaluation step and the probe's capturing
forward are lowered from `jax.ShapeDtypeStruct`s with their shardings and compiled by XLA for the topology's
devices (libtpu's abstract TPU devices, or simulated CPU devices). XLA then reports, per chip, the HBM each
program needs (`memory_analysis`) and its FLOPs and cost-model time (`cost_analysis`); every time, MFU and
tokens/s figure derived from the cost model is an *estimate*, never a measurement (tpu-aot.md).
"""
from __future__ import annotations

import dataclasses
import re
import sys
import time

import jax
import jax.numpy as jnp

from jaxsink import config as config_lib
from jaxsink import sharding, stats
from jaxsink import topology as topo_lib
from jaxsink.model import ModelSpec
from jaxsink.model.loaded import LoadedModel
from jaxsink.model.partitioning import partitioned
from jaxsink.probe import passes
from jaxsink.probe.pipeline import ProbeOptions
from jaxsink.train.step import make_eval_step
from jaxsink.train.stats import training_stats
from jaxsink.train.setup import Run
from jaxsink.train.loop import compile_steps

GiB = topo_lib.GiB
BYTE_VOCAB = 257


class DoesNotFit(ValueError):
    """A compiled program needs more memory per chip than the chip has; one-line message."""


@dataclasses.dataclass
class ProgramReport:
    """What XLA says about one compiled program, per chip (device)."""
    name: str
    argument_bytes: int = 0
    output_bytes: int = 0
    temp_bytes: int = 0
    alias_bytes: int = 0
    flops: float = 0.0            # XLA's count for one device (includes rematerialised recomputation)
    bytes_accessed: float = 0.0
    estimated_seconds: float = 0.0   # XLA's cost model (`optimal_seconds`): an estimate, not a measurement
    compile_seconds: float = 0.0
    error: str = ""               # the compiler's out-of-memory message, shortened
    custom_calls: dict = dataclasses.field(default_factory=dict)   # kernels in the compiled HLO, e.g. splash's
    cost_basis: str = "compiled program"   # where flops / bytes / time come from (`depth_extrapolate`)
    kernel_flops: float = 0.0     # attention FLOPs inside Pallas kernels, which XLA's cost model does not see

    @property
    def total_bytes(self) -> int:
        """Arguments + outputs + temporaries, minus outputs that reuse donated arguments."""
        return self.argument_bytes + self.output_bytes + self.temp_bytes - self.alias_bytes


def abstract_run(cfg, devices):
    """A `Run` without data or tokenizer: spec (vocabulary from the config), mesh, shardings, optimizer."""
    config_lib.validate(cfg, len(devices))
    vocab = cfg.model.vocab_size or (BYTE_VOCAB if cfg.data.tokenizer == "byte" else cfg.data.bpe_vocab_size)
    return Run.from_spec(cfg, ModelSpec.from_config(cfg.model, vocab), devices)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def compile_program(name: str, jitted, args, mesh) -> ProgramReport:
    """Lower and compile `jitted(*args)` (abstract args) under `mesh`; out-of-memory becomes `error`."""
    progress(f"compiling {name} for {len(mesh.devices.flat)} {mesh.devices.flat[0].platform} devices ...")
    tic = time.perf_counter()
    with jax.set_mesh(mesh):
        lowered = jitted.lower(*args)
    try:
        compiled = lowered.compile()
    except Exception as e:  # noqa: BLE001 -- XlaRuntimeError; only RESOURCE_EXHAUSTED is expected
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return ProgramReport(name, compile_seconds=time.perf_counter() - tic, error=_oom_summary(str(e)))
    report = ProgramReport(name, compile_seconds=time.perf_counter() - tic)
    mem = compiled.memory_analysis()
    if mem is not None:
        report.argument_bytes = int(mem.argument_size_in_bytes)
        report.output_bytes = int(mem.output_size_in_bytes)
        report.temp_bytes = int(mem.temp_size_in_bytes)
        report.alias_bytes = int(mem.alias_size_in_bytes)
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    report.flops = float(cost.get("flops", 0.0))
    report.bytes_accessed = float(cost.get("bytes accessed", 0.0))
    report.custom_calls = custom_calls(compiled.as_text() or "")
    report.estimated_seconds = max(float(cost.get("optimal_seconds", 0.0)), 0.0)   # CPU's is not a time
    progress(f"  {name}: {report.total_bytes / GiB:.2f} GiB per device, compiled in {report.compile_seconds:.1f} s")
    return report


def custom_calls(hlo_text: str) -> dict:
    """{custom_call_target: count} of the compiled HLO (`tpu_custom_call` is a Pallas/Mosaic kernel)."""
    out: dict = {}
    for target in re.findall(r'custom_call_target="([^"]+)"', hlo_text):
        out[target] = out.get(target, 0) + 1
    return out


def _oom_summary(message: str) -> str:
    """`Used 423.9G of 95.74G hbm` (or the message's first line) from XLA's RESOURCE_EXHAUSTED error."""
    m = re.search(r"Used ([\d.]+[KMGT]?) of ([\d.]+[KMGT]?) hbm", message)
    if m:
        return f"needs {m.group(1)}B of HBM, the chip has {m.group(2)}B"
    m = re.search(r"required for ([^()\n]*?) ?\(([\d.]+[KMGT]?)\) exceeds available HBM \(([\d.]+[KMGT]?)\)", message)
    if m:
        return f"needs {m.group(2)}B of HBM for {m.group(1)}, the chip has {m.group(3)}B"
    return " ".join(message.split())[:160]


# ---------------------------------------------------------------- the programs

def program_args(run):
    """Abstract arguments: the train state, a [grad_accum, micro, T] batch, an eval batch and probe tokens."""
    t = run.cfg.train
    micro = t.batch_size // t.grad_accum
    batch_sh = run.batch_sharding()
    tokens = jax.ShapeDtypeStruct((t.grad_accum, micro, t.seq_len), jnp.int32, sharding=batch_sh)
    row = sharding.batch_sharding(run.mesh, run.rules)
    eval_tok = jax.ShapeDtypeStruct((micro, t.seq_len), jnp.int32, sharding=row)
    mask = jax.ShapeDtypeStruct((micro,), jnp.bool_, sharding=sharding.replicated(run.mesh))
    params = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          run.abstract_params, run.param_shardings)
    return {"state": run.abstract_state(), "batch": {"inputs": tokens, "targets": tokens},
            "params": params, "eval": (eval_tok, eval_tok, mask)}


def probe_program(run):
    """The probe's first (capturing) pass at its default options, and its abstract tokens."""
    opts = ProbeOptions()
    model = LoadedModel(run.graphdef, None, run.spec, None, True, "aot")
    data = run.mesh.shape["data"] * run.mesh.shape["fsdp"]
    row = sharding.batch_sharding(run.mesh, run.rules) if opts.batch_size % data == 0 else \
        sharding.replicated(run.mesh)
    tokens = jax.ShapeDtypeStruct((opts.batch_size, opts.seq_len), jnp.int32, sharding=row)
    return passes.block_pass(model, opts.seq_len, opts.sink_eps, stats.SpikeCriterion()), tokens


PROGRAMS = ("train", "stats", "eval", "probe")


def compile_all(cfg, devices, programs=PROGRAMS, estimate: bool = True) -> tuple[object, list[ProgramReport]]:
    """Compile the chosen programs of `cfg` for `devices` (train first); returns (abstract run, reports).
    On a TPU, scanned training steps get depth-extrapolated costs (unless `estimate` is off: then their
    cost counts one layer, and only the memory figures hold) and the splash kernel's FLOPs."""
    unknown = sorted(set(programs) - set(PROGRAMS))
    if unknown or "train" not in programs:
        raise config_lib.ConfigError(f"--programs: choose from {list(PROGRAMS)}, train included; got {list(programs)}")
    run, reports = _compile(cfg, devices, programs)
    if _platform(run) == "tpu":
        if cfg.model.scan_layers and estimate:
            depth_extrapolate(cfg, devices, reports)
        elif cfg.model.scan_layers:
            reports[0].cost_basis = f"compiled program: {ONE_LAYER} (--no-estimate)"
        for report in reports:
            if report.name == "eval_step" and cfg.model.scan_layers:
                report.cost_basis = f"compiled program: {ONE_LAYER}"
        for report in reports[:2]:
            if report.custom_calls.get("tpu_custom_call") and report.name.startswith("train_step"):
                report.kernel_flops = attention_flops_per_step(run.spec, cfg.train) / len(devices)
    return run, reports


def _compile(cfg, devices, programs) -> tuple[object, list[ProgramReport]]:
    run = abstract_run(cfg, devices)
    args = program_args(run)             # built outside jax.set_mesh: eager code there would need the TPU
    steps = compile_steps(run, training_stats(cfg) if "stats" in programs else None)
    state_batch = (args["state"], args["batch"])
    reports = [compile_program("train_step", steps.plain, state_batch, run.mesh)]
    if "stats" in programs:
        reports.append(compile_program("train_step+stats", steps.with_stats, state_batch, run.mesh))
    if "eval" in programs:
        reports.append(compile_program("eval_step", jax.jit(partitioned(make_eval_step(run.graphdef), run.rules,
                                                                        _platform(run))),
                                       (args["params"], *args["eval"]), run.mesh))
    if "probe" in programs:
        probe_fn, probe_tokens = probe_program(run)
        reports.append(compile_program("probe_forward", probe_fn, (args["params"], probe_tokens), run.mesh))
    return run, reports


COST_FIELDS = ("flops", "bytes_accessed", "estimated_seconds")
ONE_LAYER = "a scanned layer counted once"     # a cost basis no step-time estimate may rest on


def depth_extrapolate(cfg, devices, reports: list[ProgramReport]) -> None:
    """XLA's cost analysis counts a `while` loop's body once, so a scanned program's FLOPs, bytes and time are
    one layer's plus the rest, whatever the depth (measured: `small` scanned at 2 and 4 layers, 0.057 TFLOP
    both). The per-layer cost comes from the same programs unrolled at 1 and 2 layers, extrapolated to L:
    cost(L) = cost(1) + (L - 1) (cost(2) - cost(1)), exact when the layers are identical. Memory stays the
    scanned program's own. Only the plain step is compiled shallow; the statistics step (the plain step plus
    an unrolled forward pass, counted in full) gets the plain step's correction added."""
    depth, costs, train = cfg.model.n_layers, [], reports[0]
    if train.error:
        return                   # no estimate for a step that does not fit
    for n_layers in (1, 2) if depth > 2 else (depth,):
        c = config_lib.from_dict(config_lib.to_dict(cfg))
        c.model.n_layers, c.model.scan_layers = n_layers, False
        progress(f"the cost of a layer: the training step unrolled at {n_layers} layer(s)")
        costs.append(_compile(c, devices, ("train",))[1][0])
    if any(c.error for c in costs):
        return
    correction = {}
    for field in COST_FIELDS:
        values = [getattr(c, field) for c in costs]
        value = values[0] if depth <= 2 else values[0] + (depth - 1) * (values[1] - values[0])
        correction[field] = value - getattr(train, field)
        setattr(train, field, value)
    for report in reports[1:]:
        if report.name == "train_step+stats" and not report.error:   # = the plain step + an unrolled pass
            for field in COST_FIELDS:
                setattr(report, field, getattr(report, field) + correction[field])
            report.cost_basis = "compiled program + the plain step's depth correction"
    train.cost_basis = (f"the same program unrolled ({depth} layers)" if depth <= 2 else
                        f"extrapolated to {depth} layers from the 1- and 2-layer programs unrolled")


def _platform(run) -> str:
    return run.mesh.devices.flat[0].platform


# ---------------------------------------------------------------- figures per chip

def attention_flops_per_step(spec: ModelSpec, t) -> float:
    """Causal attention's QK^T and PV FLOPs of one training step (forward + backward = 3 x forward)."""
    n_attention = spec.n_layers * (2 if spec.ffn == "attention" else 1)
    return 3 * 4 * t.batch_size * (t.seq_len ** 2 / 2) * spec.n_heads * spec.d_head * n_attention


def model_flops_per_step(spec: ModelSpec, t) -> float:
    """Model FLOPs of one training step (forward + backward = 3 x forward; no recomputation counted):
    6 x matmul parameters x tokens, plus causal attention's QK^T and PV (2 x 2 x T^2/2 x H x d_head per
    sequence and attention block, x3) — MaxText's convention for MFU."""
    tokens = t.batch_size * t.seq_len
    d, f, h, hkv, dh = spec.d_model, spec.d_ff, spec.n_heads, spec.kv_heads, spec.d_head
    ffn = {"swiglu": 3 * d * f, "gelu": 2 * d * f, "linear": d * d, "attention": 2 * d * (h + hkv) * dh}[spec.ffn]
    attn = 2 * d * (h + hkv) * dh
    matmul = spec.n_layers * (attn + ffn) + d * spec.vocab_size
    return 6.0 * matmul * tokens + attention_flops_per_step(spec, t)


@dataclasses.dataclass
class CompileSummary:
    config: str
    topology: str
    topology_string: str
    chips: int
    hbm_per_chip_bytes: int
    peak_flops_per_chip: float
    tokens_per_step: int
    steps: int
    model_flops_per_step: float
    programs: list
    # estimates from XLA's cost model for the plain training step (never measurements)
    estimated_step_seconds: float = 0.0
    estimated_mfu: float = 0.0
    estimated_tokens_per_s_per_chip: float = 0.0
    estimated_chip_hours: float = 0.0
    estimate_note: str = ""       # why there is no estimate, when there is none

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["programs"] = [{**dataclasses.asdict(p), "total_bytes": p.total_bytes} for p in self.programs]
        return d


def estimated_seconds(report: ProgramReport, peak_flops: float) -> float:
    """XLA's cost-model time plus the Pallas kernels' FLOPs at the chip's peak (the cost model does not see
    inside a Mosaic kernel, tpu-aot.md): an estimate, and for the kernel part a lower bound."""
    kernel = report.kernel_flops / peak_flops if peak_flops else 0.0
    return report.estimated_seconds + kernel


def run_seconds(cfg, reports, peak_flops: float) -> float:
    """Estimated seconds of a whole run: `train.steps` plain steps, of which every `stats.every`-th is the
    statistics step when that program was compiled."""
    t = cfg.train
    plain = estimated_seconds(reports[0], peak_flops)
    stats = next((r for r in reports if r.name == "train_step+stats" and not r.error), None)
    n_stats = len(range(0, t.steps, cfg.stats.every)) if stats is not None and cfg.stats.every else 0
    extra = estimated_seconds(stats, peak_flops) - plain if n_stats else 0.0
    return t.steps * plain + n_stats * extra


def _no_estimate(train: ProgramReport, seconds: float, chip, model_flops: float = 0.0) -> str:
    """Why the plain step's cost-model time is no estimate ("" when it is one). A time below the step's own
    FLOPs at the chip's peak is impossible, and so is a FLOP count below the model's own (`model_flops`, per
    chip): XLA's cost analysis is then not usable for that program (seen on v4 and v5e)."""
    if train.error or not chip:
        return "no TPU chip" if not chip else "the training step does not fit"
    if ONE_LAYER in train.cost_basis:
        return train.cost_basis
    if train.flops + train.kernel_flops < 0.9 * model_flops:
        return (f"XLA counts {(train.flops + train.kernel_flops) / 1e12:.1f} TFLOP per chip, below the model's "
                f"{model_flops / 1e12:.1f}: its cost analysis is not usable for this program")
    at_peak = train.flops / chip.peak_flops
    if seconds < at_peak:
        return (f"XLA's cost-model time ({seconds * 1e3:.1f} ms) is below the step's {train.flops / 1e12:.0f} TFLOP "
                f"per chip at the chip's peak ({at_peak * 1e3:.1f} ms): not a usable estimate for {chip.generation}")
    return ""


def summarize(config_name: str, topology, run, reports) -> CompileSummary:
    t = run.cfg.train
    chip = topology.chip
    s = CompileSummary(config_name, topology.name, topology.topology_string, topology.chips,
                       chip.hbm_bytes if chip else 0, chip.peak_flops if chip else 0.0,
                       t.batch_size * t.seq_len, t.steps, model_flops_per_step(run.spec, t), reports)
    train = reports[0]
    seconds = estimated_seconds(train, s.peak_flops_per_chip)
    s.estimate_note = _no_estimate(train, seconds, chip, s.model_flops_per_step / topology.chips)
    if not s.estimate_note:
        s.estimated_step_seconds = seconds
        s.estimated_tokens_per_s_per_chip = s.tokens_per_step / seconds / topology.chips
        s.estimated_chip_hours = run_seconds(run.cfg, reports, s.peak_flops_per_chip) * topology.chips / 3600
        s.estimated_mfu = s.model_flops_per_step / topology.chips / seconds / chip.peak_flops
    return s


def check_fits(summary: CompileSummary) -> None:
    """DoesNotFit (one line: program, need, capacity) for the first program over the chip's HBM."""
    cap = summary.hbm_per_chip_bytes
    for p in summary.programs:
        if p.error:
            raise DoesNotFit(f"{p.name} does not fit {summary.topology}: {p.error}")
        if cap and p.total_bytes > cap:
            raise DoesNotFit(f"{p.name} does not fit {summary.topology}: needs {p.total_bytes / GiB:.1f} GiB of HBM "
                             f"per chip, the chip has {cap / GiB:.1f} GiB")


def format_summary(s: CompileSummary) -> str:
    """A table for the terminal: memory per chip for each program, then the estimated figures."""
    cap = f" of {s.hbm_per_chip_bytes / GiB:.1f} GiB" if s.hbm_per_chip_bytes else ""
    lines = [f"{s.config} on {s.topology} ({s.topology_string}, {s.chips} chips), per chip{cap}:",
             f"{'program':<18}{'args GiB':>10}{'temp GiB':>10}{'out GiB':>9}{'total GiB':>11}"
             f"{'TFLOP':>9}{'est. ms':>9}{'compile s':>11}"]
    for p in s.programs:
        if p.error:
            lines.append(f"{p.name:<18}  does not fit: {p.error}   (compile {p.compile_seconds:.1f} s)")
            continue
        lines.append(f"{p.name:<18}{p.argument_bytes / GiB:>10.2f}{p.temp_bytes / GiB:>10.2f}"
                     f"{p.output_bytes / GiB:>9.2f}{p.total_bytes / GiB:>11.2f}{p.flops / 1e12:>9.1f}"
                     f"{estimated_seconds(p, s.peak_flops_per_chip) * 1e3:>9.1f}{p.compile_seconds:>11.1f}")
    kernels = ", ".join(f"{k} x{n}" for k, n in s.programs[0].custom_calls.items()) or "none"
    lines.append(f"model FLOPs per step {s.model_flops_per_step:.3e} ({s.tokens_per_step} tokens); "
                 f"custom calls in the train step: {kernels}")
    train = s.programs[0]
    if train.cost_basis != "compiled program" or train.kernel_flops:
        kernel = f"; attention kernel FLOPs {train.kernel_flops / 1e12:.1f} T/chip counted at peak (lower bound)" \
            if train.kernel_flops else ""
        lines.append(f"cost: {train.cost_basis}{kernel}")
    if s.estimate_note and s.peak_flops_per_chip:
        lines.append(f"no step-time estimate: {s.estimate_note}")
    if s.estimated_step_seconds:
        mfu = f", MFU {100 * s.estimated_mfu:.1f}%" if s.peak_flops_per_chip else ""
        lines.append(f"estimated (XLA cost model, not measured): train step {s.estimated_step_seconds * 1e3:.1f} ms"
                     f"{mfu}, {s.estimated_tokens_per_s_per_chip:,.0f} tokens/s/chip, "
                     f"{s.estimated_chip_hours:,.0f} chip-hours for {s.steps} steps")
    return "\n".join(lines)


def prepare(topology_name: str, slices: int = 1):
    """(Topology, its devices): libtpu's abstract TPU devices (the default backend stays CPU, so eager code
    runs there) or simulated CPU devices."""
    topology = topo_lib.parse_topology(topology_name, slices)
    if topology.platform == "tpu" and not jax.config.jax_platforms:
        jax.config.update("jax_platforms", "cpu")
    return topology, topo_lib.devices(topology)


def main(config: str, topology_name: str, slices: int = 1, overrides=(), json_out: str | None = None,
         programs=PROGRAMS, estimate: bool = True) -> dict:
    """`jaxsink compile`: compile, print the table to stderr, write JSON, fail if a program does not fit."""
    import json
    import pathlib
    topology, devices = prepare(topology_name, slices)
    cfg = config_lib.load_config(config, list(overrides))
    run, reports = compile_all(cfg, devices, programs, estimate)
    summary = summarize(config, topology, run, reports)
    print(format_summary(summary), file=sys.stderr)
    result = summary.to_dict()
    if json_out:
        pathlib.Path(json_out).write_text(json.dumps(result, indent=2))
    check_fits(summary)
    return result
