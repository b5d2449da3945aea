"""`jaxsink impact`: what spikes and sinks cost one model (trained here or imported) under deployment.

Text -> held-out chunks (evaluation) and separate calibration chunks -> float perplexity -> the quantization
grid, each entry with nothing kept and with the sink/spike tokens kept exact -> per-layer outlier statistics
and SQNR -> token-by-token decoding under KV-cache budgets -> pruning -> the super weight and its ablation ->
`OUT/impact.json` (docs/impact.md) and PNG plots.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxsink.data import DataError
from jaxsink.impact import kvcache, outliers, passkey, plots, prune, qmodel
from jaxsink.impact.quant import BITS, QuantSpec
from jaxsink.impact.result import EvictionRow, ImpactResult, LayerRow, PruneRow, QuantRow
from jaxsink.model import apply
from jaxsink.probe.pipeline import sequences

PARTS = ("quant", "layers", "kv", "prune", "super")
EXTRA_PARTS = ("passkey",)   # on request only: needs a model trained on configs/tiny_passkey.py
KEEP = "sinks+spikes"
W8, W4 = QuantSpec("int8", "channel"), QuantSpec("int4", "channel")
A8T, A8K = QuantSpec("int8", "tensor"), QuantSpec("int8", "token")
LAYER_QUANTIZERS = {q.label: q for q in (A8T, A8K, QuantSpec("int8", "channel"), QuantSpec("int4", "token"),
                                        QuantSpec("fp8_e4m3", "tensor"))}


def quant_grid() -> dict[str, qmodel.QuantConfig]:
    """The standard entries (practical-consequences.md) plus activations alone at 8/4 bits per granularity."""
    qc = qmodel.QuantConfig
    grid = {"W8A8/tensor": qc(W8, A8T), "W8A8/tensor/static": qc(W8, QuantSpec("int8", "tensor", static=True)),
            "W8A8/token": qc(W8, A8K), "W4A16": qc(W4), "W4A8/token": qc(W4, A8K),
            "FP8-E4M3/tensor": qc(QuantSpec("fp8_e4m3", "tensor"), QuantSpec("fp8_e4m3", "tensor")),
            "FP8-E5M2/tensor": qc(QuantSpec("fp8_e5m2", "tensor"), QuantSpec("fp8_e5m2", "tensor")),
            "KV8": qc(kv=QuantSpec("int8", "token")), "KV4": qc(kv=QuantSpec("int4", "token"))}
    for bits in (8, 4):
        for gran in ("tensor", "token", "channel"):
            grid[f"A{bits}/{gran}"] = qc(acts=QuantSpec(f"int{bits}", gran))
    return grid


class ImpactError(ValueError):
    """Bad options (unknown grid part or entry, budgets that do not fit the decoded length)."""


@dataclasses.dataclass
class ImpactOptions:
    seq_len: int = 128
    num_sequences: int = 8
    batch_size: int = 4
    calib_sequences: int = 4          # separate chunks: static scales and Wanda's input norms
    parts: tuple = PARTS
    entries: tuple = ()               # subset of quant_grid() (empty: all)
    decode_len: int = 256
    decode_sequences: int = 2
    budgets: tuple = (32, 64, 128)
    sinks: int = 4
    keep_first: int = 1               # leading tokens always kept exact (BOS / the first token: the sink)
    bos: bool | None = None
    plots: bool = True
    progress: bool = True
    rows: int = 0                     # > 0: the text is independent rows of this many tokens, each from BOS
                                      # (bb_guo's held-out split): every chunk is one row, never two halves
    passkey_prompts: int = 32         # part "passkey": held-out prompts (jaxsink.impact.passkey)
    passkey_filler: int = 12          # ... of this many filler sentences (as configs/tiny_passkey.py trains)

    def check(self):
        unknown = sorted(set(self.parts) - set(PARTS + EXTRA_PARTS)) + sorted(set(self.entries) - set(quant_grid()))
        if unknown:
            raise ImpactError(f"unknown grid part or entry {unknown}; parts {PARTS}, entries {sorted(quant_grid())}")
        if min(self.seq_len, self.num_sequences, self.batch_size, self.calib_sequences, self.decode_len) < 1:
            raise ImpactError("seq_len, num_sequences, batch_size, calib_sequences and decode_len must be >= 1")
        if "kv" in self.parts and (max(self.budgets, default=0) >= self.decode_len or min(self.budgets) <= self.sinks):
            raise ImpactError(f"KV budgets {self.budgets} must lie between sinks={self.sinks} and "
                              f"decode_len={self.decode_len}")


def _split(model, text, opts):
    """(calibration batches, evaluation batches, decoding sequences), disjoint calibration/evaluation."""
    bos = model.bos if opts.bos is None else opts.bos
    seqs = _chunks(model.tokenizer, text, opts.seq_len, opts.num_sequences + opts.calib_sequences, bos, opts.rows)
    n_eval = (len(seqs) - opts.calib_sequences) // opts.batch_size * opts.batch_size
    if n_eval < 1:
        raise DataError(f"the text gives {len(seqs)} chunks of {opts.seq_len} tokens: too few for "
                        f"{opts.calib_sequences} calibration chunks and a batch of {opts.batch_size}")
    calib, rest = seqs[:opts.calib_sequences], seqs[opts.calib_sequences:][:n_eval]
    batches = [jnp.asarray(rest[i:i + opts.batch_size]) for i in range(0, n_eval, opts.batch_size)]
    decode = None
    if "kv" in opts.parts:
        decode = _chunks(model.tokenizer, text, opts.decode_len, opts.calib_sequences + opts.decode_sequences, bos,
                         opts.rows)[opts.calib_sequences:] if opts.rows else \
            sequences(model.tokenizer, text, opts.decode_len, opts.decode_sequences, bos)
    return [jnp.asarray(calib)], batches, decode


def _chunks(tokenizer, text, seq_len, num, bos, rows):
    """The first `num` chunks of `seq_len` tokens; with `rows`, the first seq_len (after BOS) tokens of each
    of the first `num` rows, so that a chunk starts where its sequence started (Guo et al.'s BOS)."""
    if not rows:
        return sequences(tokenizer, text, seq_len, num, bos)
    body = seq_len - 1 if bos else seq_len
    ids = np.asarray(tokenizer.encode(text), np.int32)
    if body > rows or len(ids) < rows:
        raise DataError(f"chunks of {seq_len} tokens{' with BOS' if bos else ''} do not fit rows of {rows} "
                        f"tokens ({len(ids)} tokens of text)")
    out = ids[: len(ids) // rows * rows].reshape(-1, rows)[:num, :body]
    return np.concatenate([np.full((len(out), 1), tokenizer.bos_id, np.int32), out], 1) if bos else out


def _ppl(fn, batches, *extra) -> float:
    """exp of the mean per-sequence NLL over the batches; `extra[i]` is a per-batch argument list."""
    nll = [np.asarray(fn(b, *(e[i] for e in extra))) for i, b in enumerate(batches)]
    return float(np.exp(np.concatenate(nll).mean()))


def keep_masks(graphdef, params, batches, keep_first: int):
    """Per batch [B, T]: the first `keep_first` tokens plus PrefixQuant's outlier tokens at any down-projection
    input (m_t / median > 64): the sink and spike tokens to keep exact."""
    record = lambda s, x, y: outliers.outlier_tokens(x) if s.name == "w_down" else None  # noqa: E731
    run = jax.jit(lambda p, t: qmodel.observe(graphdef, p, t, record))
    masks = []
    for tokens in batches:
        rec = [r for r in run(params, tokens) if r is not None]
        first = jnp.arange(tokens.shape[1])[None] < keep_first
        masks.append(jnp.any(jnp.stack(rec), 0) | first if rec else jnp.broadcast_to(first, tokens.shape))
    return masks


def run_quant(model, params, calib, batches, keeps, calib_keeps, entries, float_ppl, bar) -> list[QuantRow]:
    rows = []
    none = [jnp.zeros_like(k) for k in keeps]
    for name, qc in entries.items():
        fn = jax.jit(lambda p, t, k, s, qc=qc: qmodel.nll(qmodel.forward(model.graphdef, p, t, qc, k, s)[0], t))
        for keep, masks, cmasks in (("none", none, [jnp.zeros_like(k) for k in calib_keeps]), (KEEP, keeps, calib_keeps)):
            scales = qmodel.calibrate(model.graphdef, params, calib, qc, cmasks) if qc.acts and qc.acts.static else None
            ppl = _ppl(lambda t, k: fn(params, t, k, scales), batches, masks)
            share = float(np.mean([np.asarray(m).mean() for m in masks]))
            bits = min(BITS[q.fmt] for q in (qc.weights, qc.acts, qc.kv) if q is not None)
            label = lambda q: q.label if q else None  # noqa: E731
            rows.append(QuantRow(name, label(qc.weights), label(qc.acts), label(qc.kv), bits, keep, ppl,
                                 ppl - float_ppl, share))
        bar.update()
    return rows


def recovery(rows: list[QuantRow]) -> dict:
    """Share of each entry's perplexity loss that keeping the sink/spike tokens exact recovers."""
    by = {(r.name, r.keep): r for r in rows}
    out = {}
    for (name, keep), r in by.items():
        kept = by.get((name, KEEP))
        if keep == "none" and kept is not None and r.delta > 0:
            out[name] = (r.delta - kept.delta) / r.delta
    return out


def run_layers(model, params, batches, keeps) -> list[LayerRow]:
    def record(site, x, y, keep):
        if site.first_with_input != site.index or site.path in qmodel.HEAD_PATHS:
            return None
        return outliers.layer_stats(x, site.x_features, LAYER_QUANTIZERS, keep)
    run = jax.jit(lambda p, t, k: qmodel.observe(model.graphdef, p, t, lambda s, x, y: record(s, x, y, k)))
    recs = [run(params, b, k) for b, k in zip(batches, keeps)]
    mean = jax.tree.map(lambda *xs: float(np.mean([np.asarray(x) for x in xs])), *recs)
    rows = []
    for site in qmodel.sites(model.graphdef, params, batches[0]):
        r = mean[site.index]
        if r is not None:
            rows.append(LayerRow(site.index, site.block, site.name, r["kurtosis_bondarenko"], r["kurtosis_osp"],
                                 r["max_abs"], r["outlier_token_share"], r["sqnr"], r["sqnr_keep"]))
    return rows


def cache_policies(opts) -> list[kvcache.CachePolicy]:
    out = []
    for b in opts.budgets:
        out += [kvcache.CachePolicy("window", b), kvcache.CachePolicy("streaming", b, sinks=opts.sinks),
                kvcache.CachePolicy("h2o", b, recent=b // 2)]
    return out


def run_kv(model, params, decode_seqs, opts, bar) -> tuple[list[EvictionRow], float]:
    seqs = jnp.asarray(decode_seqs)
    rows, full = [], None
    for policy in [kvcache.CachePolicy("full", opts.decode_len)] + cache_policies(opts):
        fn = jax.jit(lambda p, t, pol=policy: qmodel.nll(kvcache.decode(model.graphdef, p, t, pol), t))
        ppl = float(np.exp(np.asarray(fn(params, seqs)).mean()))
        if policy.kind == "full":
            full = ppl
        else:
            rows.append(EvictionRow(policy.label, policy.kind, policy.budget, policy.sinks, policy.recent, ppl))
        bar.update()
    return rows, full


def run_prune(model, params, calib, ppl_of, float_ppl, bar) -> list[PruneRow]:
    rows = []
    for method in prune.METHODS:
        for pattern in ("unstructured", "2:4"):
            pruned = prune.prune(model.graphdef, params, calib, method, 0.5, pattern)
            ppl = ppl_of(pruned)
            rows.append(PruneRow(method, pattern, 0.5, ppl, ppl - float_ppl))
            bar.update()
    return rows


def run_super(model, params, batches, ppl_of) -> dict | None:
    """The super weight and the perplexity with it zeroed (None for models without a SwiGLU FFN)."""
    if model.spec.ffn != "swiglu":
        return None
    sw = prune.find_super_weight(model.graphdef, params, batches[0])
    ablated = prune.set_weight(params, sw.path, (sw.in_channel, sw.out_channel), 0.0)
    return {**sw.to_json(), "perplexity_ablated": ppl_of(ablated)}


def _steps(opts, entries) -> int:
    return ((len(entries) if "quant" in opts.parts else 0) + (1 + 3 * len(opts.budgets) if "kv" in opts.parts else 0)
            + (4 if "prune" in opts.parts else 0) + (1 + 3 * len(opts.budgets) if "passkey" in opts.parts else 0))


def impact(model, text: str, out_dir, opts: ImpactOptions = ImpactOptions()) -> ImpactResult:
    """Run the grid on `model` (a LoadedModel) over `text`; write OUT/impact.json and the plots."""
    opts.check()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    params, wall = model.params, {}
    calib, batches, decode_seqs = _split(model, text, opts)
    float_fn = jax.jit(lambda p, t: qmodel.nll(apply(model.graphdef, p, t)[0], t))
    ppl_of = lambda p: _ppl(lambda t: float_fn(p, t), batches)  # noqa: E731
    entries = {k: v for k, v in quant_grid().items() if not opts.entries or k in opts.entries}
    bar = tqdm(total=_steps(opts, entries), desc="impact", disable=not opts.progress)
    start = time.perf_counter()
    float_ppl = ppl_of(params)
    keeps = keep_masks(model.graphdef, params, batches, opts.keep_first)
    calib_keeps = keep_masks(model.graphdef, params, calib, opts.keep_first)
    spec = model.spec
    result = ImpactResult(model.source, {"n_layers": spec.n_layers, "d_model": spec.d_model,
                                         "norm_placement": spec.norm_placement, "norm_type": spec.norm_type,
                                         "gate": spec.gate, "attention": spec.attention},
                          {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(opts).items()},
                          float_ppl, [], {}, [], None, [], [], None, wall, [])
    for part in opts.parts:
        t0 = time.perf_counter()
        if part == "quant":
            result.quant = run_quant(model, params, calib, batches, keeps, calib_keeps, entries, float_ppl, bar)
            result.recovery = recovery(result.quant)
        elif part == "layers":
            result.layers = run_layers(model, params, batches, keeps)
        elif part == "kv":
            result.eviction, result.decode_float_perplexity = run_kv(model, params, decode_seqs, opts, bar)
        elif part == "prune":
            result.pruning = run_prune(model, params, calib, ppl_of, float_ppl, bar)
        elif part == "passkey":
            result.passkey = passkey.run(model, params, cache_policies(opts), opts.passkey_prompts,
                                         opts.passkey_filler, model.bos if opts.bos is None else opts.bos, bar)
        else:
            result.super_weight = run_super(model, params, batches, ppl_of)
        wall[part] = time.perf_counter() - t0
        (out_dir / "impact.json").write_text(json.dumps(result.to_json(), indent=1))   # what is done so far
    bar.close()
    wall["total"] = time.perf_counter() - start
    if opts.plots:
        result.plots = plots.write_all(result, out_dir)
    (out_dir / "impact.json").write_text(json.dumps(result.to_json(), indent=1))
    return result
