"""PNG plots of an `ImpactResult`: perplexity against bits per granularity, per-layer SQNR and kurtosis,
perplexity against the KV-cache budget per eviction policy, passkey retrieval against it."""
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


POLICY_LABELS = {"window": "window only", "streaming": "StreamingLLM (sinks kept)", "h2o": "H2O"}


def policy_plot(rows, full, path, ylabel, title, log=True):
    """One line per eviction kind: `rows` are (kind, budget, value); `full` is the full cache's value."""
    plt, fig, ax = new_figure()
    for kind, label in POLICY_LABELS.items():
        points = sorted((budget, value) for k, budget, value in rows if k == kind)
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    if full is not None:
        ax.axhline(full, color="k", ls=":", label="full cache")
    ax.set(xlabel="KV-cache budget (tokens)", ylabel=ylabel, yscale="log" if log else "linear", title=title)
    ax.legend(fontsize=7)
    return save_figure(plt, fig, path)


def kv_plot(result, path):
    return policy_plot([(r.kind, r.budget, r.perplexity) for r in result.eviction],
                       result.decode_float_perplexity or None, path, "perplexity", "Perplexity vs KV budget")


def passkey_plot(result, path):
    """Retrieval accuracy of the passkey prompts (`jaxsink.impact.passkey`) per policy and budget."""
    full = [r.accuracy for r in result.passkey if r.kind == "full"]
    return policy_plot([(r.kind, r.budget, 100 * r.accuracy) for r in result.passkey if r.kind != "full"],
                       100 * full[0] if full else None, path, "prompts retrieved (%)",
                       "Passkey retrieval vs KV budget", log=False)


def write_all(result, out_dir) -> list[str]:
    out_dir = pathlib.Path(out_dir)
    written = []
    if result.quant:
        written.append(bits_plot(result, out_dir / "impact_bits.png"))
    if result.layers:
        written.append(layers_plot(result, out_dir / "impact_layers.png"))
    if result.eviction:
        written.append(kv_plot(result, out_dir / "impact_kv.png"))
    if result.passkey:
        written.append(passkey_plot(result, out_dir / "impact_passkey.png"))
    return written
