"""Claim verdicts: intervals over seeds decide, single runs abstain, spike claims need the scale-free and the
absolute statistic to agree, and every experiment's CLAIMS agree with its own PAPER rows."""
import json
import math

import numpy as np
import pytest

from jaxsink import experiments
from jaxsink.claims import BANDS, KEPT_FRACTION, RELATIONS, SINK_FLOOR, claim_lines, paper_results, verdict
from jaxsink.experiments import Claim, PaperRow
from jaxsink.report import reproduction
from jaxsink.stats import uncertainty as unc
from jaxsink.sweep import plan


def seeded(**variants):
    """{variant: row} from per-seed lists: spike, spike ratio, sink ratio, perplexity."""
    out = {}
    for k, (spike, ratio, sink, ppl) in variants.items():
        seeds = {"spike": spike, "spike_top1_over_median": ratio, "sink_ratio": sink, "perplexity": ppl}
        out[k] = {m: float(np.mean(v)) for m, v in seeds.items()} | {"seeds": seeds}
    return out


FLAT = ([5.0, 5.0, 5.0],)


def rows3(a_spike, b_spike, a_ratio=None, b_ratio=None, a_sink=(0.4,) * 3, b_sink=(0.4,) * 3):
    return seeded(a=(a_spike, a_ratio or a_spike, a_sink, [5.0] * 3), b=(b_spike, b_ratio or b_spike, b_sink, [5.0] * 3))


def test_spike_direction_on_intervals():
    cut = Claim("cut", "spike", "a", "<", "b")
    assert verdict(cut, rows3([100, 110, 90], [1000, 1100, 900]))[0] == "agrees"
    assert verdict(cut, rows3([3000, 3100, 2900], [1000, 1100, 900]))[0] == "disagrees"
    # the means differ 2x, but the seeds overlap: the interval reaches into the band
    v, evidence = verdict(cut, rows3([100, 900, 500], [1000, 200, 1300]))
    assert v == "inconclusive" and "seeds per variant would resolve it" in evidence


def test_one_seed_is_never_a_verdict():
    one = seeded(a=([100.0], [10.0], [0.0], [5.0]), b=([1000.0], [100.0], [0.5], [5.0]))
    for claim in (Claim("cut", "spike", "a", "<", "b"), Claim("s", "sink_ratio", "a", "<", "b")):
        v, evidence = verdict(claim, one)
        assert v == "inconclusive" and "one seed" in evidence
    assert verdict(Claim("cut", "spike", "a", "<", "b"), one, points=True)[0] == "agrees"   # the paper's rows


def test_spike_needs_scale_free_and_absolute_to_agree():
    """Sandwich norm bounds the residual: a smaller absolute top-1 with an unchanged top-1/median is a
    scale effect, not a smaller spike (review P1.4)."""
    cut = Claim("cut", "spike", "a", "<", "b")
    scale_only = rows3([100, 110, 90], [1000, 1100, 900], a_ratio=[14, 15, 13], b_ratio=[12, 13, 12])
    v, evidence = verdict(cut, scale_only)
    assert v == "inconclusive" and "top-1/median" in evidence and "top-1 |h|" in evidence
    no_ratio = {k: {m: v for m, v in r.items() if m != "spike_top1_over_median"} for k, r in scale_only.items()}
    for r in no_ratio.values():
        r["seeds"].pop("spike_top1_over_median")
    assert "no scale-free" in verdict(cut, no_ratio)[1]


@pytest.mark.parametrize("a_sink, b_sink, relation, expected", [
    ([0.01, 0.0, 0.02], [0.03, 0.01, 0.02], "<", "inconclusive"),      # both under the floor
    ([0.0, 0.01, 0.0], [0.40, 0.45, 0.42], "<", "agrees"),
    ([0.60, 0.62, 0.58], [0.40, 0.45, 0.42], "<", "disagrees"),
    ([0.30, 0.32, 0.31], [0.46, 0.45, 0.47], "kept", "agrees"),        # 0.68x: the paper's "keeps"
    ([0.70, 0.75, 0.72], [0.46, 0.45, 0.47], "kept", "agrees"),        # more sinks are kept sinks
    ([0.05, 0.06, 0.04], [0.46, 0.45, 0.47], "kept", "disagrees"),
    ([0.40, 0.0, 0.30], [0.46, 0.45, 0.47], "kept", "inconclusive"),
    ([0.40, 0.0, 0.30], [0.0, 0.01, 0.0], "kept", "inconclusive"),     # nothing to keep
])
def test_sink_rules(a_sink, b_sink, relation, expected):
    rows = rows3([1.0] * 3, [1.0] * 3, a_sink=a_sink, b_sink=b_sink)
    assert verdict(Claim("s", "sink_ratio", "a", relation, "b"), rows)[0] == expected


def test_unchanged_is_symmetric():
    same = Claim("same", "perplexity", "a", "~", "b")
    rows = seeded(a=([1.0] * 3, [1.0] * 3, [0.0] * 3, [5.0, 5.05, 4.95]), b=([1.0] * 3, [1.0] * 3, [0.0] * 3, [5.0, 5.02, 4.98]))
    assert verdict(same, rows)[0] == "agrees"
    for shift in (1.3, 1 / 1.3):
        rows["a"]["seeds"]["perplexity"] = [5.0 * shift, 5.05 * shift, 4.95 * shift]
        rows["a"]["perplexity"] = 5.0 * shift
        assert verdict(same, rows)[0] == "disagrees"


def test_a_run_that_did_not_train_is_inconclusive():
    rows = seeded(a=([10.0] * 3, [5.0] * 3, [0.0] * 3, [27.0] * 3), b=([100.0] * 3, [50.0] * 3, [0.0] * 3, [6.7] * 3))
    assert "not trained comparably" in verdict(Claim("cut", "spike", "a", "<", "b"), rows)[1]


def test_missing_variant_is_not_run_and_lines_render():
    claim = Claim("cut", "spike", "a", "<", "b")
    rows = rows3([1.0, 1.1, 0.9], [9.0, 9.5, 8.5])
    assert verdict(claim, {"a": rows["a"]})[0] == "not run"
    line = claim_lines([claim], rows)[-1]
    assert "**agrees**" in line and "a 1.0 [" in line and "(3 seeds" in line


def test_bootstrap_interval_of_two_values_is_their_range():
    """Resampling two values gives means {a, (a+b)/2, b} with chances 1/4, 1/2, 1/4: the 2.5% and 97.5%
    quantiles are a and b exactly."""
    iv = unc.bootstrap_mean([2.0, 6.0])
    assert (iv.mean, iv.lo, iv.hi, iv.n) == (4.0, 2.0, 6.0, 2)
    e = unc.bootstrap_effect([2.0, 6.0], [1.0, 1.0], "log_ratio")
    assert e.lo == pytest.approx(math.log(2)) and e.hi == pytest.approx(math.log(6))


def test_seeds_needed_is_the_normal_formula():
    assert unc.seeds_needed(0.1, 0.2) == math.ceil((1.959964 * 0.2 / 0.1) ** 2)
    assert unc.seeds_needed(0.1, float("nan")) is None and unc.seeds_needed(0.0, 0.2) == 1001


@pytest.mark.parametrize("name", experiments.names())
def test_claims_name_real_variants(name):
    names = {v for v, _ in plan(name, "tiny")}
    for claim in experiments.load(name).CLAIMS:
        assert isinstance(claim, Claim) and claim.a in names and claim.b in names
        assert claim.relation in RELATIONS and claim.metric in ("spike", "sink_ratio", "perplexity")


@pytest.mark.parametrize("name", experiments.names())
def test_claims_agree_with_their_own_paper_rows(name):
    """Applied to the paper's own numbers every encoded claim must agree (review P2.11: "static token gates
    keep the sinks" came out inconclusive on 31.1% vs 46.0%)."""
    exp = experiments.load(name)
    assert all(isinstance(r, PaperRow) for r in exp.PAPER.values())
    paper = paper_results(exp.PAPER)
    judged = [c for c in exp.CLAIMS if c.a in paper and c.b in paper]
    assert len(judged) == (len(exp.CLAIMS) if exp.PAPER else 0)
    for claim in judged:
        v, evidence = verdict(claim, paper, points=True)
        assert v == "agrees", (claim.text, evidence)


def test_the_claims_the_review_named_are_encoded():
    texts = {(c.metric, c.a, c.relation, c.b) for n in experiments.names() for c in experiments.load(n).CLAIMS}
    assert ("sink_ratio", "lr_x4", "<", "baseline") in texts
    assert ("spike", "sigmoid", "<", "softmax") in texts
    assert {("perplexity", v, "~", "pre") for v in ("sandwich", "sandwich_qk", "dyt")} <= texts
    assert 0 < KEPT_FRACTION < 31.1 / 46.0 and SINK_FLOOR == BANDS["sink_ratio"]


def test_reproduction_record_composes_finished_sweeps(tmp_path):
    results = seeded(pre=([500.0, 520, 480], [40.0, 42, 38], [0.3, 0.32, 0.28], [5.0] * 3),
                     sandwich=([50.0, 52, 48], [4.0, 4.2, 3.8], [0.28, 0.3, 0.26], [5.0] * 3),
                     sandwich_qk=([20.0, 21, 19], [2.0, 2.1, 1.9], [0.05, 0.04, 0.06], [5.0] * 3))
    for r in results.values():
        r["tokens"] = 1e6
    (tmp_path / "table5_norm").mkdir()
    (tmp_path / "table5_norm" / "results.json").write_text(json.dumps({"scale": "tiny", "variants": results}))
    text = reproduction(tmp_path, tmp_path / "repro.md", header="# R\n\n{SUMMARY}\n").read_text()
    assert "Sandwich norm cuts the spike (7x) | **agrees**" in text
    assert "Sandwich + QK-norm keeps the sinks | **disagrees**" in text
    assert "DynamicTanh cuts the spike (25x) | **not run**" in text
    assert "Not run:" in text and "agrees" in text.split("\n")[2]


def test_reproduction_record_adds_labelled_runs_of_a_table(tmp_path):
    """`table5_norm@20M` is a second Table 5 section, titled with its label, counted in the summary."""
    for folder, spikes in (("table5_norm", (50.0, 45.0)), ("table5_norm@20M", (500.0, 50.0))):
        results = seeded(pre=([spikes[0]] * 3, [spikes[0]] * 3, [0.3] * 3, [5.0] * 3),
                         sandwich=([spikes[1]] * 3, [spikes[1]] * 3, [0.3] * 3, [5.0] * 3))
        for r in results.values():
            r["tokens"] = 1e6
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
    variants = {"pre": {"perplexity": 5.4, "sink_ratio": 0.03, "spike": 118.6, "spike_top1_over_median": 40.0},
                "sandwich": {"perplexity": 5.5, "sink_ratio": 0.01, "spike": 26.6, "spike_top1_over_median": 12.0}}
    text = _demo_table({"variants": variants, "report": "R/report.md"})
    assert "paper: Sandwich norm cuts the spike (7x): inconclusive" in text and "one seed" in text
    assert "Sandwich norm keeps the sinks: inconclusive" in text and "DynamicTanh" not in text
    assert text.endswith("report: R/report.md")


def test_sink_claims_refuse_a_sink_ratio_undefined_at_its_t():
    rows = rows3([1.0] * 3, [1.0] * 3, a_sink=[0.9, 0.95, 0.92], b_sink=[0.40, 0.45, 0.42])
    rows["a"].update(sink_ratio_defined=False, probe_seq_len=8)
    v, why = verdict(Claim("s", "sink_ratio", "a", "kept", "b"), rows)
    assert v == "inconclusive" and "undefined at T = 8" in why


def test_constant_lr_baseline_stands_beside_the_papers_no_decay_row():
    from jaxsink.report import table_lines
    exp = experiments.load("table5_norm")
    rows = {"pre": {"perplexity": 5.0, "sink_ratio": 0.1, "spike": 30.0, "tokens": 1e6, "min_lr_ratio": 1.0},
            "sandwich": {"perplexity": 5.0, "sink_ratio": 0.1, "spike": 30.0, "tokens": 1e6, "min_lr_ratio": 1.0}}
    text = "\n".join(table_lines(rows, exp))
    assert "| 10.7 (no LR decay) | 56.8% | 2870 |" in text and "| 9.8 | 44.7% | 520 |" in text
    rows["pre"]["min_lr_ratio"] = 0.1
    assert "| 10.1 | 46.0% | 3818 |" in "\n".join(table_lines(rows, exp))


def test_report_cells_carry_the_seed_interval():
    from jaxsink.report import table_lines
    rows = seeded(pre=([10.0, 20.0], [5.0, 7.0], [0.1, 0.3], [5.0, 6.0]))
    rows["pre"]["tokens"] = 1e6
    line = [l for l in table_lines(rows, experiments.load("table5_norm")) if l.startswith("| pre")][0]
    assert line.count("|") == 15
    assert "| 5.50 [5.00, 6.00] | 20.0% [10.0%, 30.0%] | 15.0 [10.0, 20.0] |" in line
