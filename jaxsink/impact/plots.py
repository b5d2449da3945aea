"""PNG plots of an `ImpactResult`: perplexity against bits per granularity, per-layer SQNR and kurtosis,
perplexity against the KV-cache budget per eviction policy."""
from __future__ import annotations

import pathlib


def new_figure(ncols=1, width=6.0):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 4))
    return plt, fig, axes


def save_figure(plt, fig, path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def bits_plot(result, path):
    """Activations alone (A8 / A4 per tensor / token / channel), nothing kept (solid) or sinks kept (dashed)."""
    plt, fig, ax = new_figure()
    for gran in ("tensor", "token", "channel"):
        for keep, style in (("none", "-"), ("sinks+spikes", "--")):
            rows = sorted((r.bits, r.perplexity) for r in result.quant
                          if r.name in (f"A8/{gran}", f"A4/{gran}") and r.keep == keep)
            if rows:
                xs, ys = zip(*(rows + [(16, result.float_perplexity)]))
                ax.plot(xs, ys, style, marker="o", label=f"per {gran}{'' if keep == 'none' else ', sinks kept'}")
    ax.set(xlabel="activation bits", ylabel="perplexity", yscale="log", title="Perplexity vs activation bits")
    ax.legend(fontsize=7)
    return save_figure(plt, fig, path)


def layers_plot(result, path):
    plt, fig, (a, b) = new_figure(2)
    sites = [r.site for r in result.layers]
    for label in (result.layers[0].sqnr if result.layers else {}):
        a.plot(sites, [r.sqnr[label] for r in result.layers], marker=".", label=label)
    a.set(xlabel="linear-layer input (execution order)", ylabel="SQNR (dB)", title="SQNR per layer input")
    a.legend(fontsize=7)
    b.plot(sites, [r.kurtosis_bondarenko for r in result.layers], marker=".", label="Bondarenko (per sequence)")
    b.plot(sites, [max(r.kurtosis_osp, 1e-3) for r in result.layers], marker=".", label="OSP (per token, excess)")
    b.set(xlabel="linear-layer input (execution order)", ylabel="kurtosis", yscale="log", title="Kurtosis")
    b.legend(fontsize=7)
    return save_figure(plt, fig, path)


def kv_plot(result, path):
    plt, fig, ax = new_figure()
    for kind in ("window", "streaming", "h2o"):
        rows = sorted((r.budget, r.perplexity) for r in result.eviction if r.kind == kind)
        if rows:
            ax.plot(*zip(*rows), marker="o", label={"window": "window only", "streaming": "StreamingLLM (sinks kept)",
                                                    "h2o": "H2O"}[kind])
    if result.decode_float_perplexity:
        ax.axhline(result.decode_float_perplexity, color="k", ls=":", label="full cache")
    ax.set(xlabel="KV-cache budget (tokens)", ylabel="perplexity", yscale="log", title="Perplexity vs KV budget")
    ax.legend(fontsize=7)
    return save_figure(plt, fig, path)


def write_all(result, out_dir) -> list[str]:
    out_dir = pathlib.Path(out_dir)
    written = []
    if result.quant:
        written.append(bits_plot(result, out_dir / "impact_bits.png"))
    if result.layers:
        written.append(layers_plot(result, out_dir / "impact_layers.png"))
    if result.eviction:
        written.append(kv_plot(result, out_dir / "impact_kv.png"))
    return written
