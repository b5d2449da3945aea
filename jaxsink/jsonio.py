"""JSON-ready values, written once for every file jaxsink writes (probe.json, metrics.jsonl, results.json).

JSON has no NaN or Infinity and no numpy types: `json_ready` turns numpy / jax scalars and arrays into Python
numbers and lists, dict keys into strings, and non-finite floats into `non_finite(x)`: None (null) by
default; metrics.jsonl writes the strings "nan", "inf", "-inf" instead, which it reads back as floats.
"""
from __future__ import annotations

import math

import numpy as np


def null(_: float) -> None:
    return None


def as_string(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def json_ready(x, non_finite=null):
    """`x` with every value JSON can hold, recursively (tuples become lists)."""
    if isinstance(x, dict):
        return {str(k): json_ready(v, non_finite) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v, non_finite) for v in x]
    if isinstance(x, np.ndarray) or (hasattr(x, "shape") and hasattr(x, "dtype") and not np.isscalar(x)):
        return json_ready(np.asarray(x).tolist(), non_finite)
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else non_finite(float(x))
    return x
