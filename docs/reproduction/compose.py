"""`python docs/reproduction/compose.py` (from the repository root, after the sweeps): compose docs/reproduction.md: the header, the seeded sections (jaxsink.report over runs/record), a
claim-by-claim change table, then the restated previous record and the testbed sections kept from the file."""
import json, pathlib, re, shutil, sys
from jaxsink import experiments
from jaxsink.claims import verdict
from jaxsink.experiments import Claim
from jaxsink.report import reproduction
from jaxsink.restate import parse_sections


def _why(c, now: str, ev: str, n: dict) -> str:
    seeds = f"{n.get(c.a)} vs {n.get(c.b)} seeds"
    if now == "not run":
        return "variant not re-run (CPU time)"
    if "floor" in ev:
        return "no sinks at 0.3M tokens: the sink floor gates it"
    if "not trained comparably" in ev:
        return "perplexities differ > 1.3x: not trained comparably"
    if "statistics disagree" in ev:
        return f"top-1 |h| and top-1/median disagree ({seeds})"
    if now == "agrees":
        return f"interval over {seeds} " + ("inside the no-effect band" if c.relation == "~" else
                                             "beyond the band, the claimed way")
    if now == "disagrees":
        return f"interval over {seeds} " + ("outside the no-effect band" if c.relation == "~" else
                                             "beyond the band, the other way")
    return f"interval over {seeds} reaches into the band"


def _compact(ev: str) -> str:
    """The effect interval(s) of a verdict's evidence, or the evidence itself (a gate's reason)."""
    pieces = re.split(r"(top-1/median|top-1 \|h\||perplexity|sink ratio): ", ev)
    out = []
    for label, text in zip(pieces[1::2], pieces[2::2]):
        m = re.search(r"(?:ratio|difference) [-+\d.]+(?:x| points)? \[[^\]]+\]", text)
        if m:
            out.append(f"{label} {m.group(0)}")
    return "; ".join(out) or ev


ROOT, DOC = pathlib.Path("runs/record"), pathlib.Path("docs/reproduction.md")
KEEP_FROM = "## The previous record (2026-11-29) restated"
old_doc = DOC.read_text()
tail = old_doc[old_doc.index(KEEP_FROM):]
out = pathlib.Path("runs/record_out/reproduction.md"); out.parent.mkdir(exist_ok=True)
reproduction(ROOT, out, pathlib.Path("docs/reproduction_intro.md").read_text())
body = out.read_text()
# an experiment with a seeded (labelled) section does not also need its "Not run" stub
seeded = {p.name.partition("@")[0]: p for p in ROOT.glob("*@*") if (p / "results.json").exists()}
for name in experiments.names():
    title = experiments.load(name).TITLE
    stub = re.compile(rf"## {re.escape(title)}\n\nNot run: `runs/record/{name}/results.json` does not exist.\n\n")
    body = stub.sub("" if name in seeded else
                    f"## {title}\n\nNot re-run with seeds for this record (CPU time); its previous single-seed "
                    "numbers are restated below.\n\n", body)
for png in (out.parent / "reproduction").glob("*.png"):
    shutil.copy(png, DOC.parent / "reproduction" / png.name)
# claim by claim: previous verdict (1 seed), restated, now (seeded)
old = {s["title"]: s for s in parse_sections(pathlib.Path("docs/reproduction_2026-11-29.md").read_text())}
rows = ["## Claim by claim: the verdict now, its interval, and what changed", "",
        "Previous: `docs/reproduction_2026-11-29.md` (1 seed, 1.0M tokens, bf16, the first rules). Restated: the same "
        "numbers under the current rules (`python -m jaxsink.restate`). Now: this record's seeded runs (0.3M tokens, "
        "float32). The evidence column gives the interval the verdict rests on.", "",
        "| table | claim | previous | restated (1 seed) | now | evidence now | why it changed |", "|---|---|---|---|---|---|---|"]
for name, folder in sorted(seeded.items()):
    exp = experiments.load(name)
    res = json.loads((folder / "results.json").read_text())["variants"]
    sec = old.get(exp.TITLE, {"results": {}, "old": {}})
    n = {v: r.get("n_seeds", 1) for v, r in res.items()}
    for c in exp.CLAIMS:
        c = Claim(*c)
        prev = sec["old"].get(c.text, "not encoded")
        restated = verdict(c, sec["results"])[0] if sec["results"] else "-"
        now, ev = verdict(c, res)
        why = _why(c, now, ev, n)
        if prev != now and prev in ("agrees", "disagrees"):
            why += "; the previous verdict was one seed at 1.0M tokens"
        elif prev != now and now in ("agrees", "disagrees"):
            why += "; first decided here (0.3M tokens; the previous record's budget was 1.0M)"
        rows.append(f"| {name} | {c.text} | {prev} | {restated} | **{now}** | {_compact(ev)} | {why} |")
marker = "\n## Prior work"
i = body.index(marker)
body = body[:i] + "\n" + "\n".join(rows) + "\n" + body[i:]
DOC.write_text(body.rstrip("\n") + "\n\n\n" + tail)
print(DOC, len(DOC.read_text().splitlines()))
