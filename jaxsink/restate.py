"""Restate a finished reproduction record under the current claim rules: each section's table of single-seed
results (`docs/reproduction.md` as it was) is read back, every claim is judged again, and a markdown table
gives the old verdict, the point reading under the new rules (scale-free spike statistic included) and the
verdict with its power (seeds that would resolve it at the calibrated seed spread).

`python -m jaxsink.restate OLD_RECORD.md` prints the tables; the record's own numbers are the only input."""
from __future__ import annotations

import re

from jaxsink import experiments
from jaxsink.claims import verdict
from jaxsink.experiments import Claim

ROW = re.compile(r"^\| (\S+) \| ([\d.]+) \| ([\d.]+)% \| ([\d.]+) \| ([\d.]+) \|")
CLAIM = re.compile(r"^\| (.+?) \| \*\*(agrees|disagrees|inconclusive|not run)\*\* \|")


def parse_sections(text: str) -> list[dict]:
    """[{title, results {variant: row}, old {claim text: verdict}}] from the record's markdown."""
    sections, cur = [], None
    for line in text.splitlines():
        if line.startswith("## "):
            cur = {"title": line[3:].strip(), "results": {}, "old": {}}
            sections.append(cur)
        elif cur is not None and (m := ROW.match(line)):
            v, ppl, sink, spike, ratio = m.groups()
            cur["results"][v] = {"perplexity": float(ppl), "sink_ratio": float(sink) / 100, "spike": float(spike),
                                 "spike_top1_over_median": float(ratio)}
        elif cur is not None and (m := CLAIM.match(line)):
            cur["old"][m.group(1)] = m.group(2)
    return [s for s in sections if s["results"]]


def _experiment_for(title: str):
    for name in experiments.names():
        exp = experiments.load(name)
        if title == exp.TITLE or title.startswith(exp.TITLE + " ("):
            return exp
    return None


def restate(text: str) -> str:
    lines = []
    for sec in parse_sections(text):
        exp = _experiment_for(sec["title"])
        if exp is None:
            continue
        lines += [f"### {sec['title']}", "", "| claim | old verdict | point reading now | verdict now | why |",
                  "|---|---|---|---|---|"]
        for claim in exp.CLAIMS:
            claim = Claim(*claim)
            old = sec["old"].get(claim.text, "not encoded")
            point = verdict(claim, sec["results"], points=True)[0]
            now, why = verdict(claim, sec["results"])
            lines.append(f"| {claim.text} | {old} | {point} | **{now}** | {why} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys
    print(restate(open(sys.argv[1]).read()))
