"""Sweep reports gain the deployment-cost columns (issue 15 item 5): planted impact.json files show up in the
table with their numbers, a variant without one gets blank cells, and the per-variant grid fits the model."""
import json

import pytest

from jaxsink.cli import _parser
from jaxsink.impact import sweep_columns
from jaxsink.impact.runner import ImpactOptions
from jaxsink.model import ModelSpec
from jaxsink.sweep import report_finished


def _impact(w8a8, a8, window16, window32, full, wanda):
    """An impact.json with the fields the columns read (plus rows they must ignore)."""
    return {"quant": [{"name": "W8A8/tensor", "keep": "none", "delta": w8a8},
                      {"name": "W8A8/tensor", "keep": "sinks+spikes", "delta": -9.0},
                      {"name": "A8/tensor", "keep": "none", "delta": a8}],
            "eviction": [{"kind": "window", "budget": 32, "perplexity": window32},
                         {"kind": "streaming", "budget": 16, "perplexity": 99.0},
                         {"kind": "window", "budget": 16, "perplexity": window16}],
            "decode_float_perplexity": full,
            "pruning": [{"method": "magnitude", "pattern": "unstructured", "delta": 50.0},
                        {"method": "wanda", "pattern": "2:4", "delta": 60.0},
                        {"method": "wanda", "pattern": "unstructured", "delta": wanda}]}


def test_columns_of_a_planted_impact_json():
    cols = sweep_columns.columns(_impact(0.25, 1.5, 14.0, 11.0, 10.0, 3.75))
    assert cols == {"ΔPPL W8A8/tensor": 0.25, "ΔPPL A8/tensor": 1.5, "ΔPPL window (smallest budget)": 4.0,
                    "ΔPPL Wanda 50%": 3.75, "window budget": 16}
    assert set(sweep_columns.columns({}).values()) == {None}


def _finished(folder, ppl, impact=None):
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({"perplexity": ppl, "spike": 100.0, "sink_ratio": 0.5,
                                                    "tokens": 10 ** 6, "params": 10 ** 5}))
    if impact is not None:
        (folder / "impact").mkdir()
        (folder / "impact" / "impact.json").write_text(json.dumps(impact))


def test_report_shows_planted_numbers_and_blanks(tmp_path):
    _finished(tmp_path / "pre", 12.0, _impact(0.25, 1.5, 14.0, 11.0, 10.0, 3.75))
    _finished(tmp_path / "sandwich", 11.0)
    report_finished("table5_norm", "tiny", tmp_path, only=["pre", "sandwich"])
    lines = (tmp_path / "report.md").read_text().splitlines()
    head = next(x for x in lines if x.startswith("| variant"))
    assert head.endswith("| ΔPPL W8A8/tensor | ΔPPL A8/tensor | ΔPPL window (smallest budget) | ΔPPL Wanda 50% |")
    pre = next(x for x in lines if x.startswith("| pre |"))
    assert pre.endswith("| +0.25 | +1.50 | +4.00 @16 | +3.75 |")
    sandwich = next(x for x in lines if x.startswith("| sandwich |"))
    assert sandwich.endswith("|  |  |  |  |") and sandwich.count("|") == head.count("|")
    saved = json.loads((tmp_path / "results.json").read_text())["variants"]
    assert saved["pre"]["impact"]["n"] == 1 and saved["sandwich"]["impact"] is None


def test_report_without_any_impact_has_no_columns(tmp_path):
    _finished(tmp_path / "pre", 12.0)
    report_finished("table5_norm", "tiny", tmp_path, only=["pre"])
    assert "ΔPPL" not in (tmp_path / "report.md").read_text()


def test_seeds_are_averaged(tmp_path):
    _finished(tmp_path / "pre" / "seed_0", 12.0, _impact(0.2, 1.0, 14.0, 11.0, 10.0, 3.0))
    _finished(tmp_path / "pre" / "seed_1", 12.0, _impact(0.4, 2.0, 16.0, 11.0, 10.0, 5.0))
    cols = sweep_columns.read([tmp_path / "pre" / "seed_0", tmp_path / "pre" / "seed_1"])
    assert cols["n"] == 2 and cols["ΔPPL W8A8/tensor"] == pytest.approx(0.3)
    assert cols["ΔPPL window (smallest budget)"] == pytest.approx(5.0) and cols["ΔPPL Wanda 50%"] == 4.0


@pytest.mark.parametrize("max_seq_len,rows,decode,budget", [(1024, 0, 256, 32), (64, 0, 64, 8), (1024, 96, 96, 12)])
def test_sweep_grid_fits_the_model(max_seq_len, rows, decode, budget):
    spec = ModelSpec(vocab_size=264, n_layers=1, d_model=16, n_heads=1, d_head=16, d_ff=32, max_seq_len=max_seq_len)
    opts = sweep_columns.sweep_options(spec, rows, progress=False)
    opts.check()
    assert isinstance(opts, ImpactOptions) and (opts.decode_len, opts.budgets) == (decode, (budget,))
    assert opts.seq_len <= decode and set(opts.entries) == set(sweep_columns.ENTRIES)
    assert _parser().parse_args(["sweep", "table5_norm", "--workdir", "w", "--impact"]).impact
