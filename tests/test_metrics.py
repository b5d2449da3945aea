"""Metric sinks: metrics.jsonl (strict JSON, resume truncation), TensorBoard scalars and the progress bar."""
import json
import math
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from jaxsink.train.metrics import MetricsWriter, Progress, read_metrics, truncate_after


def tb_scalars(tb_dir) -> dict:
    """{(tag, step): value} from the TFRecord event files (8-byte length, 4-byte crc, payload, 4-byte crc)."""
    out = {}
    for path in tb_dir.glob("events.out.tfevents.*"):
        raw, pos = path.read_bytes(), 0
        while pos < len(raw):
            (n,) = struct.unpack("<Q", raw[pos:pos + 8])
            event = event_pb2.Event.FromString(raw[pos + 12:pos + 12 + n])
            pos += 16 + n
            for v in event.summary.value:
                out[(v.tag, event.step)] = v.simple_value
    return out


def strict_json(line: str) -> dict:
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(line, parse_constant=reject)


def test_rows_non_finite_values_and_tensorboard(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.write(0, {"loss": 2.5, "lr": jnp.bfloat16(0.25), "tokens": jnp.int32(7), "norms": jnp.array([1.0, 2.0]),
                     "nan": float("nan"), "inf": jnp.float32(jnp.inf), "spikes": [0.5, -math.inf]})
    writer.write(10, {"loss": np.float64(1.5)})
    writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [strict_json(x) for x in lines] == [
        {"step": 0, "loss": 2.5, "lr": 0.25, "tokens": 7, "norms": [1.0, 2.0], "nan": "nan", "inf": "inf",
         "spikes": [0.5, "-inf"]},
        {"step": 10, "loss": 1.5}]
    first = read_metrics(tmp_path / "metrics.jsonl")[0]
    assert math.isnan(first["nan"]) and first["inf"] == math.inf and first["spikes"] == [0.5, -math.inf]
    assert isinstance(first["tokens"], int)
    scalars = tb_scalars(tmp_path / "tb")
    assert scalars[("loss", 0)] == 2.5 and scalars[("loss", 10)] == 1.5
    assert scalars[("norms/0", 0)] == 1.0 and scalars[("norms/1", 0)] == 2.0
    assert ("norms", 0) not in scalars and math.isnan(scalars[("nan", 0)])


def test_non_primary_process_writes_nothing(tmp_path):
    writer = MetricsWriter(tmp_path / "w", is_primary=False)
    writer.write(0, {"loss": 1.0})
    writer.close()
    assert not (tmp_path / "w").exists()


def test_rejects_non_numeric_values(tmp_path):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    with pytest.raises(TypeError, match="metric 'name'"):
        writer.write(0, {"name": "abc"})
    with pytest.raises(TypeError, match=r"metric 'matrix'.*\[2, 2\]"):
        writer.write(0, {"matrix": np.eye(2)})
    writer.close()
    assert not (tmp_path / "tb").exists()


def test_read_metrics_skips_only_a_truncated_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "loss": 3.0}\n{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert read_metrics(path) == [{"step": 0, "loss": 3.0}, {"step": 1, "loss": 2.0}]
    path.write_text('{"step": 0, "loss": 3.0}\n{"step": 1, "lo\n{"step": 2, "loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not a JSON line"):
        read_metrics(path)


def write_steps(writer, steps):
    """What the training loop writes: a train row every step and an eval row after step 3."""
    for s in steps:
        writer.write(s, {"loss": 1.0 / (s + 1)})
        if s == 3:
            writer.write(s, {"eval/loss": 0.5})


def test_resumed_run_metrics_equal_an_uninterrupted_run(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    writer = MetricsWriter(straight, tensorboard=False)
    write_steps(writer, range(10))
    writer.close()
    writer = MetricsWriter(resumed, tensorboard=False)
    write_steps(writer, range(8))
    writer.close()
    with open(resumed / "metrics.jsonl", "a") as f:  # killed mid-line
        f.write('{"step": 8, "loss": 0.1')
    # resumed from the checkpoint of step 5 (steps 0..4 done), as the loop does: open the writer, then truncate
    writer = MetricsWriter(resumed, tensorboard=False)
    truncate_after(resumed / "metrics.jsonl", 4)
    assert [r["step"] for r in read_metrics(resumed / "metrics.jsonl")] == [0, 1, 2, 3, 3, 4]
    write_steps(writer, range(5, 10))
    writer.close()
    assert (resumed / "metrics.jsonl").read_bytes() == (straight / "metrics.jsonl").read_bytes()


def test_truncate_after_without_a_file(tmp_path):
    truncate_after(tmp_path / "metrics.jsonl", 3)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_progress_bar_shows_step_loss_throughput_and_eta(capsys):
    bar = Progress(10, initial_step=2)
    bar.update(5, 1.23456, 12345.6)
    bar.close()
    shown = capsys.readouterr().err
    assert "5/10" in shown and "loss=1.2346" in shown and "tok_s=12,346" in shown and "<" in shown
    quiet = Progress(10, enabled=False)
    quiet.update(3, 1.0, 1.0)
    quiet.close()
    assert capsys.readouterr().err == ""
