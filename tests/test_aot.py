"""`jaxsink compile`: topology names, and ahead-of-time compilation from shapes only (cpu-8 always; TPU
topologies when libtpu is importable)."""
import importlib.util

import pytest

from jaxsink.config import ConfigError
from jaxsink.topology import parse_topology, standard_shape

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


@pytest.mark.parametrize("name,string,chips", [
    ("v5p-8", "v5p:2x2x1", 4), ("v5p-16", "v5p:2x2x2", 8), ("v5p-64", "v5p:2x4x4", 32),
    ("v5p-256", "v5p:4x4x8", 128), ("v5p-1024", "v5p:8x8x8", 512), ("v4-8", "v4:2x2x1", 4),
    ("v4-32", "v4:2x2x4", 16), ("v4-128", "v4:4x4x4", 64), ("v4-256", "v4:4x4x8", 128),
    ("v5e-1", "v5e:1x1", 1), ("v5e-4", "v5e:2x2", 4), ("v5e-8", "v5e:2x4", 8), ("v5e-16", "v5e:4x4", 16),
    ("v5e-256", "v5e:16x16", 256), ("v6e-8", "v6e:2x4", 8), ("v6e-256", "v6e:16x16", 256),
    ("v5p:4x4x12", "v5p:4x4x12", 192), ("V5E:2x2", "v5e:2x2", 4),
])
def test_topology_names_map_to_cloud_tpu_shapes(name, string, chips):
    t = parse_topology(name)
    assert (t.topology_string, t.chips) == (string, chips)


def test_topology_slices_cpu_and_bad_names():
    assert parse_topology("v5e-16", slices=2).chips == 32
    assert parse_topology("cpu-8").chips == 8 and parse_topology("cpu-8").platform == "cpu"
    assert standard_shape(2, 3) == (1, 1, 2)
    for bad, words in [("v5p-12", "power of two"), ("v5p-7", "even"), ("v7x-8", "unknown"),
                       ("v5e:2x2x1", "2 positive"), ("cpu-0", "at least one")]:
        with pytest.raises(ConfigError, match=words):
            parse_topology(bad)


def test_cpu_topology_compiles_the_training_step_from_shapes_only():
    """cpu-8 (the test session's 8 CPU devices): train step with and without statistics; the arguments per
    device are the replicated state (params + Adam's two moments, float32) plus one device's batch rows."""
    import numpy as np
    from jaxsink import aot
    result = aot.main("tiny", "cpu-8", overrides=["model.n_layers=1", "train.batch_size=8", "train.seq_len=32"],
                      programs=("train", "stats"))
    train, stats = result["programs"]
    assert (train["name"], stats["name"]) == ("train_step", "train_step+stats")
    # embed + head (vocabulary 257 rounded up to 264), q/k/v/o, SwiGLU, two block norms and the final norm
    n = 264 * 128 * 2 + 4 * 128 * 4 * 32 + 3 * 128 * 512 + 3 * 128
    batch = 2 * 4 * 32                      # inputs and targets: one of the 8 rows per device
    assert 0 <= train["argument_bytes"] - (3 * 4 * n + batch) < 64   # + step counters
    assert train["flops"] > 0 and stats["argument_bytes"] == train["argument_bytes"]
    assert np.isclose(result["model_flops_per_step"], aot.model_flops_per_step(
        aot.ModelSpec.from_config(aot.config_lib.load_config("tiny", ["model.n_layers=1"]).model, 257),
        aot.config_lib.load_config("tiny", ["train.batch_size=8", "train.seq_len=32"]).train))


def test_a_program_that_does_not_fit_is_one_line_naming_it():
    from jaxsink.aot import CompileSummary, DoesNotFit, ProgramReport, check_fits
    s = CompileSummary("paper_7b", "v5e-4", "v5e:2x2", 4, 16 * 2 ** 30, 197e12, 1, 1, 1.0,
                       [ProgramReport("train_step", argument_bytes=20 * 2 ** 30)])
    with pytest.raises(DoesNotFit, match=r"^train_step does not fit v5e-4: needs 20.0 GiB .* the chip has 16.0 GiB$"):
        check_fits(s)


def test_xla_out_of_memory_messages_become_need_and_capacity():
    """Both forms of XLA:TPU's RESOURCE_EXHAUSTED (the second one was cut at its first decimal point, found by
    the large draws of benchmarks/fuzz_configs.py: 'exceeds available HBM (15')."""
    from jaxsink.aot import _oom_summary
    assert _oom_summary("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. Used 423.9G of 95.74G hbm. "
                        "Exceeded hbm capacity by 328.2G.") == "needs 423.9GB of HBM, the chip has 95.74GB"
    assert _oom_summary("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
                        "(235.00G) exceeds available HBM (15.75G).") == \
        "needs 235.00GB of HBM for HLO temporaries, the chip has 15.75GB"


def test_without_libtpu_the_command_says_how_to_get_it(monkeypatch, capsys):
    import sys
    from jaxsink.cli import main
    monkeypatch.setitem(sys.modules, "libtpu", None)           # import libtpu -> ImportError
    assert main(["compile", "--config", "tiny", "--topology", "v5e-4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install -e ".[tpu]"' in err[0]


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu not installed (pip install -e '.[tpu]')")
@pytest.mark.parametrize("config,topology,extra,programs", [
    ("tiny", "v5e:2x2", ["model.n_layers=1"], ("train", "stats")),
    ("small", "v5p:2x2x1", ["model.n_layers=1", "model.scan_layers=True", "model.remat=full",
                            "train.batch_size=8"], ("train",)),
])
def test_tpu_topology_compiles_and_fits(config, topology, extra, programs):
    from jaxsink import aot
    r = aot.main(config, topology, overrides=extra, programs=programs)
    assert r["hbm_per_chip_bytes"] > 0 and 0 < r["estimated_mfu"] < 1 and r["estimated_chip_hours"] > 0
    for p in r["programs"]:
        assert not p["error"] and 0 < p["total_bytes"] < r["hbm_per_chip_bytes"]
    if config == "small":                       # T = 1024: the splash kernel is a Mosaic custom call
        assert r["programs"][0]["custom_calls"].get("tpu_custom_call", 0) >= 2


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu not installed (pip install -e '.[tpu]')")
def test_scanned_step_costs_are_extrapolated_in_depth():
    """XLA counts a scanned layer once; the depth-extrapolated FLOPs of a 3-layer scanned step equal the
    unrolled 3-layer program's (to 1%), and its cost-model time is within 30% of it (fusion differs)."""
    from jaxsink import aot, config as config_lib, topology
    devices = topology.devices(topology.parse_topology("v5e:2x2"))
    costs = {}
    for scan in (True, False):
        cfg = config_lib.load_config("tiny", ["model.n_layers=3", f"model.scan_layers={scan}", "model.remat=full",
                                              "train.batch_size=8"])
        costs[scan] = aot.compile_all(cfg, devices, ("train",))[1][0]
    assert costs[True].cost_basis.startswith("extrapolated to 3 layers") and costs[False].cost_basis == "compiled program"
    assert abs(costs[True].flops / costs[False].flops - 1) < 0.01
    assert abs(costs[True].estimated_seconds / costs[False].estimated_seconds - 1) < 0.3


def test_a_cost_model_time_faster_than_peak_is_no_estimate():
    """Seen on v4: XLA's cost-model time below the step's FLOPs at the chip's peak; no MFU is derived from it."""
    from jaxsink import aot
    from jaxsink.topology import parse_topology
    chip = parse_topology("v4-128").chip
    fast = aot.ProgramReport("train_step", flops=1.6e15, estimated_seconds=0.38)      # 1.6 PFLOP in 0.38 s
    assert "below the step's 1600 TFLOP" in aot._no_estimate(fast, 0.38, chip)
    slow = aot.ProgramReport("train_step", flops=1.6e15, estimated_seconds=9.0)
    assert aot._no_estimate(slow, 9.0, chip) == ""
    low_count = aot.ProgramReport("train_step", flops=3.4e12, estimated_seconds=9.0)   # llama_1b on v5e-16
    assert "below the model's 13.6" in aot._no_estimate(low_count, 9.0, chip, 13.6e12)


def test_with_libtpu_but_no_tpu_chip_the_command_defaults_to_the_cpu(monkeypatch):
    """The `[tpu]` extra on a CPU machine: `jaxsink` sets JAX_PLATFORMS=cpu (no libtpu start-up errors), unless
    the user set it or a TPU / GPU device is present."""
    from jaxsink import entry
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setattr(entry.importlib.util, "find_spec", lambda name: object())
    devices = {"/sys/bus/pci/devices/*/vendor": [], "/dev/accel*": [], "/dev/nvidia[0-9]*": []}
    monkeypatch.setattr(entry.glob, "glob", lambda pattern: devices[pattern])
    entry.default_to_cpu_without_tpu()
    assert entry.os.environ["JAX_PLATFORMS"] == "cpu"
    monkeypatch.delenv("JAX_PLATFORMS")
    devices["/dev/accel*"] = ["/dev/accel0"]                     # a Cloud TPU VM
    entry.default_to_cpu_without_tpu()
    assert "JAX_PLATFORMS" not in entry.os.environ
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    entry.default_to_cpu_without_tpu()
    assert entry.os.environ["JAX_PLATFORMS"] == "tpu"
