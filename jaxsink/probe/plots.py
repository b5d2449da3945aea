"""PNG figures of a probe (matplotlib, headless): the paper's Figs. 1-3 and the sink maps.

Every figure function takes plain NumPy data (from `probe.json` or the statistics functions) and a path,
so a figure can be regenerated from saved results without the model; `write_all` draws a probe's figures.
"""
from __future__ import annotations

import dataclasses
import pathlib

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxsink import stats  # noqa: E402
from jaxsink.probe import passes  # noqa: E402


def _save(fig, path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def life_cycle(blocks: list[dict], path, title: str = "") -> str:
    """Top-3 and median |h| per block, residual stream (top) and block outputs (bottom), log scale (Fig. 1)."""
    idx = [b["index"] for b in blocks]
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for ax, key, label in ((axes[0], "residual", "residual stream after block"),
                           (axes[1], "output", "block output F_i")):
        top = np.array([b[f"{key}_top3"] for b in blocks], dtype=float)
        for k, style in enumerate(("-o", "--o", ":o")):
            ax.plot(idx, np.maximum(top[:, k], 1e-6), style, ms=3, label=f"top-{k + 1}")
        med = np.array([b[f"{key}_median"] for b in blocks], dtype=float)
        ax.plot(idx, np.maximum(med, 1e-6), "-", color="gray", label="median")
        ax.set_yscale("log")
        ax.set_ylabel("|activation|")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8, ncol=4)
    axes[1].set_xlabel("block (1-based; odd = attention, even = FFN)")
    axes[1].set_xticks(idx if len(idx) <= 24 else idx[::max(1, len(idx) // 16)])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def head_heatmap(values: np.ndarray, path, title: str, cbar: str, flags: np.ndarray | None = None) -> str:
    """A layer x head map (e.g. first-token attention mass), sink heads marked with a dot."""
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.5 + 0.35 * values.shape[1]), max(3.0, 1.2 + 0.3 * values.shape[0])))
    im = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    if flags is not None:
        ys, xs = np.nonzero(np.asarray(flags))
        ax.scatter(xs, ys, s=12, c="red", marker="o", label="sink head")
        if len(xs):
            ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=cbar)
    return _save(fig, path)


def attention_maps(maps: list[tuple[str, np.ndarray]], path) -> str:
    """Attention probabilities [T, T] of chosen heads, side by side."""
    n = max(len(maps), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
    for ax, (label, a) in zip(axes[0], maps):
        ax.imshow(np.asarray(a, dtype=float), cmap="magma", vmin=0, vmax=1)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    return _save(fig, path)


def activations_3d(h: np.ndarray, path, title: str, max_channels: int | None = None) -> str:
    """|h| of one layer as bars over tokens x channels (Sun et al. 2024, Fig. 1 style)."""
    a = np.abs(np.asarray(h, dtype=float))
    if max_channels and a.shape[1] > max_channels:
        keep = np.sort(np.argsort(a.max(axis=0))[-max_channels:])
        a, channels = a[:, keep], keep
    else:
        channels = np.arange(a.shape[1])
    fig = plt.figure(figsize=(8, 5))
    ax = fig.add_subplot(projection="3d")
    tt, cc = np.meshgrid(np.arange(a.shape[0]), np.arange(a.shape[1]), indexing="ij")
    ax.bar3d(cc.ravel(), tt.ravel(), 0, 0.8, 0.8, a.ravel(), shade=True)
    ax.set_xlabel("channel index (top channels)" if max_channels else "channel")
    ax.set_ylabel("token position")
    ax.set_zlabel("|h|")
    ax.set_xticks(np.arange(len(channels))[:: max(1, len(channels) // 8)])
    ax.set_xticklabels(channels[:: max(1, len(channels) // 8)], fontsize=7)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def silu_scatter(cos: np.ndarray, ratio: np.ndarray, magnitude: np.ndarray, path, title: str) -> str:
    """Per token: cosine and norm ratio of SiLU input vs output, coloured by block-output max (Fig. 2)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    order = np.argsort(magnitude)
    for ax, y, label in ((axes[0], cos, "cos(z, SiLU(z))"), (axes[1], ratio, "||SiLU(z)|| / ||z||")):
        sc = ax.scatter(np.asarray(magnitude)[order], np.asarray(y)[order], c=np.log10(np.asarray(magnitude)[order] + 1e-9),
                        s=6, cmap="plasma")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("max |block output| of the token")
        ax.set_ylabel(label)
    fig.colorbar(sc, ax=axes, label="log10 max |output|")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def uk_norms(per_block: dict[int, np.ndarray], path) -> str:
    """||U_k||_F for every output channel k of every SwiGLU block (Fig. 3): outliers mark spike channels."""
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for block, norms in sorted(per_block.items()):
        norms = np.asarray(norms, dtype=float)
        ax.scatter(np.full(norms.shape, block), norms, s=4, alpha=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("FFN block (1-based)")
    ax.set_ylabel("||U_k||_F per output channel k")
    return _save(fig, path)


def metric_curves(curves: dict[str, tuple[list, list]], path, ylabel: str, logy: bool = False,
                  xlabel: str = "training step") -> str:
    """One line per run: a statistic (spike, sink ratio, loss) against the training step."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, (steps, values) in curves.items():
        ax.plot(steps, values, "-o", ms=2, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _save(fig, path)


# ------------------------------------------------------------------ the figures of one probe

def write_all(model, seqs, result, out_dir) -> list[str]:
    """Every figure of a `ProbeResult` into `out_dir` (one forward pass each for the maps that need
    intermediates the result does not keep); returns the file names."""
    files = [life_cycle([dataclasses.asdict(b) for b in result.blocks], out_dir / "life_cycle.png",
                        title=result.source)]
    if result.heads:
        mass = np.array([[h.first_token_mass for h in row] for row in result.heads])
        flags = np.array([[h.is_sink for h in row] for row in result.heads])
        files.append(head_heatmap(mass, out_dir / "sink_heads.png",
                                  f"first-token attention mass; sink ratio {result.sink_ratio:.3f}", "alpha_1", flags))
        files.append(_attention_map_figure(model, seqs, result.heads, out_dir))
    peak = result.spike_peak_block
    h = passes.capture_one(model, seqs[:1], "residual")[peak][0]
    files.append(activations_3d(h, out_dir / "activations_3d.png", f"|h| after block {peak}",
                                max_channels=min(model.spec.d_model, 64)))
    raw = result.silu.raw
    if raw:
        i = (result.step_up_blocks or [2])[0]
        i = i if i in raw else sorted(raw)[0]
        files.append(silu_scatter(raw[i]["cos"].ravel(), raw[i]["norm_ratio"].ravel(), raw[i]["magnitude"].ravel(),
                                  out_dir / "silu.png", f"FFN block {i}"))
    if result.mechanism.uk_norm_all:
        files.append(uk_norms(result.mechanism.uk_norm_all, out_dir / "uk_norms.png"))
    return [pathlib.Path(f).name for f in files]


def _attention_map_figure(model, seqs, rows, out_dir) -> str:
    """The two heads with the most first-token mass and the one with the least, on the first sequence."""
    heads = sorted((h for row in rows for h in row), key=lambda h: -h.first_token_mass)
    probs = passes.capture_one(model, seqs[:1], "attn_probs")
    maps = [(f"block {h.block} head {h.head} (alpha_1 {h.first_token_mass:.2f})",
             stats.sink_view(probs[h.block][0, h.head], model.spec.attention)) for h in heads[:2] + heads[-1:]]
    return attention_maps(maps, out_dir / "attention_maps.png")
