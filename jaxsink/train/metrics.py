"""Host-side metric sinks of the training loop: a JSON-lines file, TensorBoard and a progress bar.

`WORKDIR/metrics.jsonl` holds one JSON object per `MetricsWriter.write` call: {"step": s, name: value, ...}.
Values are numbers, or lists of numbers for 1-D arrays. JSON has no NaN/Infinity, so non-finite floats are
written as the strings "nan", "inf" and "-inf"; `read_metrics` turns them back into floats.
"""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import tqdm
from tensorboardX import SummaryWriter

from jaxsink.jsonio import as_string, json_ready

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class MetricsWriter:
    def __init__(self, workdir, *, tensorboard: bool = True, is_primary: bool = True):
        """Only the primary (jax process 0) writes: the other processes of a multi-host run share its numbers."""
        self._file = self._tb = None
        if not is_primary:
            return
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self._file = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            self._tb = SummaryWriter(logdir=str(workdir / "tb"))

    def write(self, step: int, scalars: dict) -> None:
        """Append one line (flushed at once, so a killed run keeps every finished line) and the TB scalars."""
        if self._file is None:
            return
        values = {name: _host_value(name, v) for name, v in scalars.items()}
        row = {"step": int(step), **{name: json_ready(v, as_string) for name, v in values.items()}}
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, v in values.items():
                for tag, x in _tb_scalars(name, v):
                    self._tb.add_scalar(tag, x, global_step=int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        self._file = self._tb = None


def read_metrics(path) -> list[dict]:
    """The rows of a metrics.jsonl; a truncated last line (the run was killed mid-write) is skipped."""
    lines = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(_decode(json.loads(line)))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}:{i + 1} is not a JSON line") from None
    return rows


def truncate_after(path, step: int) -> None:
    """Drop the rows with step > `step` (and a truncated last line), so that a run resumed from a checkpoint
    leaves the same file as an uninterrupted run. Rewrites in place: an open MetricsWriter appends after."""
    path = pathlib.Path(path)
    if not path.exists():
        return
    raw = path.read_bytes()
    kept = [line for line in raw.splitlines(keepends=True) if _keep(line, step)]
    new = b"".join(kept)
    if new != raw:
        with open(path, "r+b") as f:
            f.write(new)
            f.truncate()


class Progress:
    """tqdm bar over training steps: step/total, ETA, loss and tokens/s."""

    def __init__(self, total_steps: int, initial_step: int = 0, enabled: bool = True):
        self._bar = tqdm.tqdm(total=total_steps, initial=initial_step, disable=not enabled, unit="step",
                              dynamic_ncols=True)

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        """`step`: steps completed so far."""
        self._bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def _host_value(name: str, value):
    """A python number, or a list of numbers for a 1-D array (jax/numpy values are fetched to the host)."""
    a = np.asarray(value)
    numeric = a.dtype.kind in "biuf" or "float" in a.dtype.name  # bfloat16 & co. (ml_dtypes) have kind "V"
    if not numeric or a.ndim > 1:
        raise TypeError(f"metric {name!r}: expected a number or a 1-D numeric array, got {a.dtype}{list(a.shape)}")
    return a.tolist()


def _decode(row: dict) -> dict:
    def number(v):
        if isinstance(v, list):
            return [number(x) for x in v]
        return _NON_FINITE.get(v, v) if isinstance(v, str) else v
    return {k: number(v) for k, v in row.items()}


def _tb_scalars(name: str, value):
    if isinstance(value, list):
        return [(f"{name}/{i}", float(v)) for i, v in enumerate(value)]
    return [(name, float(value))]


def _keep(line: bytes, step: int) -> bool:
    """Complete JSON lines of steps <= step."""
    if not line.endswith(b"\n"):
        return False
    try:
        return json.loads(line)["step"] <= step
    except (json.JSONDecodeError, KeyError, TypeError):
        return False
