"""The testbed's deployment-cost claims (`jaxsink.bb_impact`): figures from a planted impact.json, verdicts on
planted per-seed figures whose intervals can be computed by hand, and the row-aligned chunks of bb_guo text."""
import argparse
import json
import math

import numpy as np
import pytest

from jaxsink import bb_impact, experiments
from jaxsink.config import load_config
from jaxsink.data import DataError
from jaxsink.data.tokenizer import ByteTokenizer
from jaxsink.impact import cli as impact_cli
from jaxsink.impact.runner import KEEP, _chunks
from jaxsink.workdir import write_config

B = bb_impact.BUDGET


def _impact_json(float_ppl=6.0, full=6.5, window=7.15, streaming=6.6, a4t=6.6, a4t_keep=6.3):
    quant = [{"name": n, "keep": k, "perplexity": p} for n, k, p in (
        ("A8/tensor", "none", 6.06), ("A4/tensor", "none", a4t), ("A4/tensor", KEEP, a4t_keep),
        ("A4/token", "none", 6.12), ("W8A8/tensor", "none", 6.03))]
    eviction = [{"policy": f"window:{B}", "perplexity": window},
                {"policy": f"streaming:1+{B - 1}", "perplexity": streaming}]
    return {"float_perplexity": float_ppl, "decode_float_perplexity": full, "quant": quant, "eviction": eviction,
            "pruning": [{"method": "wanda", "pattern": "2:4", "perplexity": 6.9}]}


def test_figures_are_the_log_ratios():
    f = bb_impact.figures(_impact_json())
    assert f["window_cost"] == pytest.approx(math.log(1.1))           # 7.15 / 6.5
    assert f["sink_restore"] == pytest.approx(math.log(7.15 / 6.6))
    assert f["a4_tensor_cost"] == pytest.approx(math.log(1.1)) and f["a8_tensor_cost"] == pytest.approx(math.log(1.01))
    assert f["a4_tensor_keep_gain"] == pytest.approx(math.log(6.6 / 6.3))
    assert f["a4_tensor_over_token"] == pytest.approx(math.log(6.6 / 6.12))
    assert f["wanda_24_cost"] == pytest.approx(math.log(1.15)) and f["float_loss"] == pytest.approx(math.log(6.0))
    assert set(f) == {"float_loss", *bb_impact.FIGURES}


def _table(**variants):
    return {v: {"window_cost": list(x), "float_loss": [1.8] * len(x)} for v, x in variants.items()}


def test_verdicts_on_planted_figures():
    t = _table(sink=[0.05] * 4, free=[0.0] * 4, noisy=[-0.05, 0.05, -0.04, 0.06], two=[0.1, 0.1])
    j = lambda rel, a, b=None: bb_impact.judge(("c", "window_cost", rel, a, b), t)  # noqa: E731
    assert j(">", "sink")[0] == "agrees" and j(">", "sink", "free")[0] == "agrees"
    assert j(">", "free", "sink")[0] == "disagrees" and j("<", "sink", "free")[0] == "disagrees"
    assert j("~", "free")[0] == "agrees" and j("~", "sink")[0] == "disagrees"
    assert j(">", "noisy")[0] == "inconclusive" and j("~", "noisy")[0] == "inconclusive"
    assert j(">", "two")[0] == "inconclusive" and "fewer than 3" in j(">", "two")[1]
    assert j(">", "sink", "absent")[0] == "not run"
    v, _, e = j(">", "sink", "free")
    assert (e.mean, e.lo, e.hi) == pytest.approx((0.05, 0.05, 0.05))     # constant seeds: a point


def test_interval_by_hand():
    """Three seeds [x, x, x + 0.3]: a resample's mean is x with probability (2/3)^3 = 0.30 > 0.025 and x + 0.3
    with probability 1/27 = 0.037 > 0.025, so the 95% interval is [x, x + 0.3]: it reaches into the band
    (inconclusive) at x = 0 and lies above it (agrees) at x = 0.05."""
    for x, want in ((0.0, "inconclusive"), (0.05, "agrees")):
        t = _table(a=[x, x, x + 0.3])
        v, _, e = bb_impact.judge(("c", "window_cost", ">", "a", None), t)
        assert v == want and (e.lo, e.hi, e.mean) == pytest.approx((x, x + 0.3, x + 0.1))


def test_untrained_pair_is_inconclusive():
    t = _table(a=[0.05] * 3, b=[0.0] * 3)
    t["b"]["float_loss"] = [3.0] * 3
    assert "not trained comparably" in bb_impact.judge(("c", "window_cost", ">", "a", "b"), t)[1]


@pytest.mark.parametrize("name", ["bb_table5", "bb_table7"])
def test_impact_claims_name_real_variants_and_figures(name):
    exp = experiments.load(name)
    assert exp.IMPACT_CLAIMS
    for text, fig, rel, a, b in exp.IMPACT_CLAIMS:
        assert fig in bb_impact.FIGURES and rel in (">", "<", "~") and a in exp.PAPER and b in (None, *exp.PAPER)


def test_report_writes_markdown_and_json(tmp_path):
    f = bb_impact.figures(_impact_json())
    table = {v: {k: [x] * 3 for k, x in {**f, "bos_attention": 0.7}.items()} for v in ("pre", "sandwich")}
    text = bb_impact.report("bb_table5", table, tmp_path)
    saved = json.loads((tmp_path / "impact_claims.json").read_text())
    assert "| pre | 3 |" in text and len(saved["claims"]) == len(experiments.load("bb_table5").IMPACT_CLAIMS)
    assert {c["verdict"] for c in saved["claims"] if c["a"] == "sandwich_qk"} == {"not run"}
    assert (tmp_path / bb_impact.plot(table, tmp_path / "p.png").split("/")[-1]).stat().st_size > 1000


def test_row_chunks_start_at_each_rows_bos():
    tok = ByteTokenizer()
    rows = np.random.default_rng(0).integers(97, 123, (5, 8))
    text = tok.decode(rows.reshape(-1))
    got = _chunks(tok, text, 6, 4, True, 8)
    want = np.concatenate([np.full((4, 1), tok.bos_id), rows[:4, :5]], 1)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_chunks(tok, text, 8, 5, False, 8), rows)
    with pytest.raises(DataError, match="do not fit rows of 8"):
        _chunks(tok, text, 10, 2, True, 8)


def test_cli_uses_rows_for_bb_guo_workdirs(tmp_path):
    write_config(load_config("configs/bb_cpu.py"), tmp_path / "bb", ByteTokenizer())
    write_config(load_config("configs/tiny.py"), tmp_path / "tiny", ByteTokenizer())
    ns = lambda wd, text=None: argparse.Namespace(workdir=str(tmp_path / wd), text=text)  # noqa: E731
    assert impact_cli._rows(ns("bb")) == 64 and impact_cli._rows(ns("tiny")) == 0
    assert impact_cli._rows(ns("bb", "shakespeare")) == 0
