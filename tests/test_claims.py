"""Claim verdicts on planted results: each rule agrees, disagrees and abstains where it should."""
import json

import pytest

from jaxsink import experiments
from jaxsink.claims import claim_lines, verdict
from jaxsink.experiments import Claim
from jaxsink.report import reproduction
from jaxsink.sweep import plan


def rows(**values):
    return {k: {"spike": s, "sink_ratio": r, "perplexity": p} for k, (s, r, p) in values.items()}


@pytest.mark.parametrize("a, b, expected", [
    ((100.0, 0.4, 5.0), (1000.0, 0.4, 5.0), "agrees"),        # spike 10x lower
    ((1100.0, 0.4, 5.0), (1000.0, 0.4, 5.0), "inconclusive"),  # 1.1x: within the 1.25x band
    ((3000.0, 0.4, 5.0), (1000.0, 0.4, 5.0), "disagrees"),
])
def test_spike_direction(a, b, expected):
    assert verdict(Claim("cut", "spike", "a", "<", "b"), rows(a=a, b=b))[0] == expected


@pytest.mark.parametrize("x, y, relation, expected", [
    (0.01, 0.03, "<", "inconclusive"),    # both below the floor: no sinks to judge
    (0.00, 0.053, "~", "inconclusive"),   # one sink head of 16 in the reference is not evidence
    (0.01, 0.40, "<", "agrees"),
    (0.45, 0.40, "<", "inconclusive"),    # inside the margin
    (0.60, 0.40, "<", "disagrees"),
    (0.35, 0.40, "~", "agrees"),          # kept
    (0.10, 0.40, "~", "disagrees"),       # lost
    (0.25, 0.40, "~", "inconclusive"),
    (0.02, 0.01, "~", "inconclusive"),    # nothing to keep
])
def test_sink_rules(x, y, relation, expected):
    assert verdict(Claim("s", "sink_ratio", "a", relation, "b"), rows(a=(1, x, 5), b=(1, y, 5)))[0] == expected


def test_a_run_that_did_not_train_is_inconclusive():
    assert verdict(Claim("cut", "spike", "a", "<", "b"), rows(a=(10.0, 0.0, 27.0), b=(100.0, 0.0, 6.7)))[0] == "inconclusive"
    assert verdict(Claim("same", "perplexity", "a", "~", "b"), rows(a=(1, 0, 27.0), b=(1, 0, 6.7)))[0] == "disagrees"
    assert verdict(Claim("same", "perplexity", "a", "~", "b"), rows(a=(1, 0, 6.9), b=(1, 0, 6.7)))[0] == "agrees"


def test_missing_variant_is_not_run_and_lines_render():
    claim = Claim("cut", "spike", "a", "<", "b")
    assert verdict(claim, rows(a=(1, 0, 5)))[0] == "not run"
    lines = claim_lines([claim], rows(a=(1.0, 0.0, 5.0), b=(9.0, 0.0, 5.0)))
    assert "**agrees**" in lines[-1] and "a 1.0 vs b 9.0" in lines[-1]


@pytest.mark.parametrize("name", experiments.names())
def test_claims_name_real_variants(name):
    names = {v for v, _ in plan(name, "tiny")}
    for text, metric, a, relation, b in experiments.load(name).CLAIMS:
        assert a in names and b in names and relation in "<>~" and metric in ("spike", "sink_ratio", "perplexity")


def test_reproduction_record_composes_finished_sweeps(tmp_path):
    variants = {"pre": (500.0, 0.3, 5.0), "sandwich": (50.0, 0.28, 5.0), "sandwich_qk": (20.0, 0.1, 5.0)}
    results = {k: {"spike": s, "sink_ratio": r, "perplexity": p, "tokens": 1e6} for k, (s, r, p) in variants.items()}
    (tmp_path / "table5_norm").mkdir()
    (tmp_path / "table5_norm" / "results.json").write_text(json.dumps({"scale": "tiny", "variants": results}))
    out = reproduction(tmp_path, tmp_path / "repro.md", header="# R\n\n{SUMMARY}\n")
    text = out.read_text()
    assert "Sandwich norm cuts the spike (7x) | **agrees**" in text
    assert "Sandwich + QK-norm keeps the sinks | **disagrees**" in text
    assert "DynamicTanh cuts the spike (25x) | **not run**" in text
    assert "Not run:" in text and "4 agrees, 1 disagrees, 2 not run" in text


def test_reproduction_record_adds_labelled_runs_of_a_table(tmp_path):
    """`table5_norm@20M` is a second Table 5 section, titled with its label, counted in the summary."""
    for folder, spikes in (("table5_norm", (50.0, 45.0)), ("table5_norm@20M", (500.0, 50.0))):
        results = {k: {"spike": s, "sink_ratio": 0.3, "perplexity": 5.0, "tokens": 1e6}
                   for k, s in zip(("pre", "sandwich"), spikes)}
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "results.json").write_text(json.dumps({"scale": "tiny", "variants": results}))
    (tmp_path / "table5_norm@empty").mkdir()                                  # no results.json: ignored
    text = reproduction(tmp_path, tmp_path / "repro.md", header="{SUMMARY}\n").read_text()
    title = experiments.load("table5_norm").TITLE
    assert f"## {title}\n" in text and f"## {title} (20M)\n" in text and "(empty)" not in text
    first, second = text.split(f"## {title} (20M)")
    assert "Sandwich norm cuts the spike (7x) | **inconclusive**" in first       # 45 vs 50: under 1.25x
    assert "Sandwich norm cuts the spike (7x) | **agrees**" in second            # 50 vs 500
    assert "--workdir " + str(tmp_path / "table5_norm@20M") in second


def test_demo_prints_the_papers_claims_it_can_judge():
    from jaxsink.cli import _demo_table
    variants = {"pre": {"perplexity": 5.4, "sink_ratio": 0.03, "spike": 118.6},
                "sandwich": {"perplexity": 5.5, "sink_ratio": 0.01, "spike": 26.6}}
    text = _demo_table({"variants": variants, "report": "R/report.md"})
    assert "paper: Sandwich norm cuts the spike (7x): agrees (sandwich 26.6 vs pre 118.6)" in text
    assert "Sandwich norm keeps the sinks: inconclusive" in text and "DynamicTanh" not in text
    assert text.endswith("report: R/report.md")
