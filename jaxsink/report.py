"""A sweep's `results.json` and `report.md`: the paper's table format, our numbers beside the paper's,
and plots of spike and sink ratio against the training step and of each variant's life cycle."""
from __future__ import annotations

import json
import pathlib

from jaxsink import experiments
from jaxsink.claims import claim_lines, verdict
from jaxsink.impact import sweep_columns
from jaxsink.probe import plots
from jaxsink.stats.uncertainty import bootstrap_mean
from jaxsink.train.metrics import read_metrics


def write_report(workdir, name: str, scale: str, results: dict, experiment) -> pathlib.Path:
    workdir = pathlib.Path(workdir)
    (workdir / "results.json").write_text(json.dumps({"experiment": name, "scale": scale, "variants": {
        k: {m: v.get(m) for m in ("perplexity", "sink_ratio", "spike", "params", "tokens", "config_overrides",
                                  "sink1_gu", "spike_top1_over_median", "spike_position", "bits_per_byte",
                                  "first_token_mass_mean", "seeds", "n_seeds", "seed_values", "per_sequence_sd",
                                  "n_sequences", "folder", "min_lr_ratio", "sink_ratio_defined", "probe_seq_len",
                                  "impact")}
        for k, v in results.items()}}, indent=2))
    figures = _figures(workdir, results)
    lines = [f"# {experiment.TITLE} ({scale} scale)", "",
             f"`jaxsink sweep {name} --scale {scale} --workdir {workdir}` regenerates this report; "
             "each variant's workdir holds its metrics, checkpoints and probe.", "",
             *table_lines(results, experiment), "", *claim_lines(getattr(experiment, "CLAIMS", ()), results), ""]
    lines += [f"![{f}]({f})" for f in figures]
    path = workdir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def table_lines(results: dict, experiment) -> list[str]:
    """The paper's table format (PPL | Sink ratio | Spike), ours beside the paper's."""
    heads = sweep_columns.headers(results)     # deployment costs, when some variant has an impact.json
    lines = ["| variant | PPL | Sink ratio | Spike | top-1/median | Sink_1 | first-token mass | spike pos | params | "
             "tokens | seeds | paper PPL | paper Sink | paper Spike |" + "".join(f" {h} |" for h in heads),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(heads)]
    swapped = False
    for variant, r in results.items():
        paper, swap = paper_reference(experiment.PAPER.get(variant), r)
        swapped |= swap
        ours = (f"| {variant} | {_cell(r, 'perplexity', '{:.2f}')} | {_cell(r, 'sink_ratio', '{:.1%}')} | "
                f"{_cell(r, 'spike', '{:.1f}')} | {_cell(r, 'spike_top1_over_median', '{:.0f}')} | "
                f"{_cell(r, 'sink1_gu', '{:.1%}')} | {_cell(r, 'first_token_mass_mean', '{:.3f}')} | "
                f"{r.get('spike_position', '')} | "
                f"{(r.get('params') or 0) / 1e6:.2f}M | {r['tokens'] / 1e6:.1f}M | {r.get('n_seeds', 1)} |")
        mark = " (no LR decay)" if swap else ""
        lines.append(ours + (f" {paper.perplexity}{mark} | {paper.sink_ratio_percent}% | {paper.spike} |" if paper
                             else " - | - | - |") + sweep_columns.cells(r, heads))
    note = ["", "The baseline row keeps the LR constant (`train.min_lr_ratio=1.0`, configs/tiny_sinks.py), so it "
            "stands beside the paper's no-LR-decay row of Table 3 (10.7 / 56.8% / 2870), not its decayed "
            "baseline (10.1 / 46.0% / 3818)."] if swapped else []
    note += [sweep_columns.NOTE] if heads else []
    return lines + note + ["", "Brackets: 95% bootstrap interval over seeds (with 2-3 seeds it under-covers). "
                           "Sink ratio: the paper's Eq. 28 (eps 0.3, T = 64, held-out text). Spike: top-1 |h| of the "
                    "residual stream over all blocks (mean over sequences). Paper numbers are 7B models after 100B "
                    "tokens: compare directions, not magnitudes. Claims are judged by `jaxsink.claims`."]


def _cell(row: dict, metric: str, fmt: str) -> str:
    """The mean, with its 95% bootstrap interval over seeds when there are two or more."""
    if row.get(metric) is None:
        return "-"
    vals = row.get("seeds", {}).get(metric, [row[metric]])
    iv = bootstrap_mean(vals)
    return fmt.format(iv.mean) + (f" [{fmt.format(iv.lo)}, {fmt.format(iv.hi)}]" if iv.n > 1 else "")


def paper_reference(paper, row: dict):
    """(the paper's row to print beside ours, whether it was swapped): a constant-LR run of the paper's
    baseline (Table 3 "baseline", LR decayed to 0.1x) is compared with the paper's no-LR-decay row instead."""
    table3 = experiments.load("table3_optimization").PAPER
    if paper is not None and tuple(paper) == tuple(table3["baseline"]) and row.get("min_lr_ratio") == 1.0:
        return table3["no_lr_decay"], True
    return paper, False


def _figures(workdir: pathlib.Path, results: dict) -> list[str]:
    spike, sink, life = {}, {}, {}
    for variant in results:
        folder = results[variant].get("folder") or variant.replace("/", "_")     # with seeds: the first seed's
        path = workdir / folder / "metrics.jsonl"
        rows = [r for r in read_metrics(path) if "sink_ratio" in r] if path.exists() else []
        spike[variant] = ([r["step"] for r in rows], [r["spike"] for r in rows])
        sink[variant] = ([r["step"] for r in rows], [r["sink_ratio"] for r in rows])
        lc = results[variant].get("life_cycle", [])
        life[variant] = ([b["index"] for b in lc], [b["residual_top3"][0] for b in lc])
    out = []
    if any(s for s, _ in spike.values()):
        out.append(pathlib.Path(plots.metric_curves(spike, workdir / "spike_vs_step.png", "spike (top-1 |h|)", logy=True)).name)
        out.append(pathlib.Path(plots.metric_curves(sink, workdir / "sink_vs_step.png", "sink ratio")).name)
    if any(s for s, _ in life.values()):
        out.append(pathlib.Path(plots.metric_curves(life, workdir / "life_cycle.png", "top-1 |h| after block",
                                                    logy=True, xlabel="block")).name)
    return out


def reproduction(root, out, header: str = "") -> pathlib.Path:
    """docs/reproduction.md from the sweeps under `root` (one folder per experiment with results.json): per
    table ours beside the paper's, every claim judged, the sweep's plots copied next to `out`. A folder
    `EXPERIMENT@LABEL` (say `table5_norm@20M`: the same table trained longer) is one more section for that
    table, titled with its label, and its claims count in the summary too."""
    root, out = pathlib.Path(root), pathlib.Path(out)
    lines, tally = [header] if header else [], {}
    for name in experiments.names():
        exp = experiments.load(name)
        if hasattr(exp, "BOS_CLAIMS"):    # a seeded testbed table (jaxsink.bb_seeds): its own claims.md
            lines += _seeded_section(exp, name, root / name)
            continue
        folders = [root / name, *sorted(p for p in root.glob(f"{name}@*") if (p / "results.json").exists())]
        for folder in folders:
            lines += _reproduction_section(exp, name, folder, out, tally)
    summary = ", ".join(f"{n} {v}" for v, n in sorted(tally.items()))
    out.write_text("\n".join(lines).replace("{SUMMARY}", summary) + "\n")
    return out


def _seeded_section(exp, name: str, folder: pathlib.Path) -> list[str]:
    """The claims.md of `python -m jaxsink.bb_seeds` under its own title (its verdict rules differ from
    `jaxsink.claims`, so its verdicts are not in the summary count); nothing if it was not run."""
    saved = folder / "claims.md"
    if not saved.exists():
        return []
    body = saved.read_text().split("\n", 1)[1]
    return [f"## {exp.TITLE}", "", f"`python -m jaxsink.bb_seeds {name} --workdir {folder} --seeds 0 1 2`", body]


def _reproduction_section(exp, name: str, folder: pathlib.Path, out: pathlib.Path, tally: dict) -> list[str]:
    label = folder.name.partition("@")[2]
    title = f"{exp.TITLE} ({label})" if label else exp.TITLE
    saved = folder / "results.json"
    if not saved.exists():
        return [f"## {title}", "", f"Not run: `{saved}` does not exist.", ""]
    data = json.loads(saved.read_text())
    results, claims = data["variants"], getattr(exp, "CLAIMS", ())
    for claim in claims:
        v = verdict(claim, results)[0]
        tally[v] = tally.get(v, 0) + 1
    command = f"jaxsink sweep {name} --scale {data['scale']} --workdir {folder}"
    lines = [f"## {title}", "", f"`{command}` (plus the overrides in the header)", "",
             *table_lines(results, exp), "", *claim_lines(claims, results), ""]
    figures_dir = out.parent / out.stem
    for png in sorted(folder.glob("*.png")):
        figures_dir.mkdir(parents=True, exist_ok=True)
        target = figures_dir / f"{folder.name.replace('@', '_')}_{png.name}"
        target.write_bytes(png.read_bytes())
        lines.append(f"![{folder.name} {png.stem}]({figures_dir.name}/{target.name})")
    return lines + [""]


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser(description="Compose the reproduction record from finished sweeps.")
    p.add_argument("root")
    p.add_argument("--out", default="docs/reproduction.md")
    p.add_argument("--header", default="", help="a markdown file put first; {SUMMARY} becomes the verdict counts")
    a = p.parse_args()
    print(reproduction(a.root, a.out, pathlib.Path(a.header).read_text() if a.header else ""))
