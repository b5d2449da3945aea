"""Fuzzed malformed importer inputs: truncated and bit-flipped safetensors and GGUF files (headers and tensor
data), wrong dtypes, NaN/Inf weights; and `jaxsink probe --text` with empty, binary and too-short text.

Every case either imports (a flipped bit inside a weight's mantissa is a valid, different checkpoint) or fails
with one `CheckpointImportError` / `DataError` line naming the file; never another exception, and a failed
import returns nothing (the arrays placed so far are dropped with the exception).
"""
import json
import pathlib
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from jaxsink.importers import CheckpointImportError, load_gguf, load_hf
from test_importers import TINY, llama_tensors, write_gguf, write_hf

EXAMPLES = 40   # per format in CI (derandomised); benchmarks/fuzz_importers.py runs more
TRIED = {"hf": {"loaded": 0, "refused": 0}, "gguf": {"loaded": 0, "refused": 0}}


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_importers")
    tensors = llama_tensors(TINY)
    hf = write_hf(root / "hf", TINY, tensors)
    gguf_path = write_gguf(root / "m.gguf", TINY, tensors)
    return {"hf": (hf / "model.safetensors").read_bytes(), "gguf": gguf_path.read_bytes(), "root": root}


def header_size(data: bytes, kind: str) -> int:
    """Bytes before the tensor data: safetensors' 8-byte length + JSON header; GGUF: up to the first tensor
    (approximated by the metadata and tensor-info region, which holds every string of the file)."""
    if kind == "hf":
        return 8 + struct.unpack("<Q", data[:8])[0]
    return min(len(data), max(64, len(data) - sum(x.nbytes for x in llama_tensors(TINY).values())))


MUTATIONS = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("flip_header"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("flip_data"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("nonfinite"), st.sampled_from([np.nan, np.inf, -np.inf]), st.integers(0, 10 ** 6)),
    st.tuples(st.just("dtype"), st.sampled_from(["F64", "F16", "BF16", "I32", "I8", "BOOL", "U8", "F8_E4M3"])),
)


def mutate(data: bytes, kind: str, mutation) -> bytes:
    op, *args = mutation
    head = header_size(data, kind)
    if op == "truncate":
        return data[: int(args[0] * len(data))]
    if op in ("flip_header", "flip_data"):
        lo, hi = (0, head) if op == "flip_header" else (head, len(data))
        i = lo + int(args[0] * (hi - lo))
        return data[:i] + bytes([data[i] ^ (1 << args[1])]) + data[i + 1:]
    if op == "nonfinite":    # one float32 of the tensor data set to NaN / +-Inf
        n = (len(data) - head) // 4
        i = head + 4 * (args[1] % n)
        return data[:i] + np.float32(args[0]).tobytes() + data[i + 4:]
    if kind == "hf":        # dtype: the first F32 tag of the JSON header replaced (header length fixed up)
        text = data[8:head].decode().replace('"F32"', json.dumps(args[0]), 1)
        return struct.pack("<Q", len(text)) + text.encode() + data[head:]
    return data    # GGUF: its type codes are covered by the header bit flips


def load(kind: str, root: pathlib.Path, data: bytes):
    if kind == "hf":
        (root / "hf" / "model.safetensors").write_bytes(data)
        return load_hf(root / "hf")
    (root / "fuzz.gguf").write_bytes(data)
    return load_gguf(root / "fuzz.gguf")


def check_one(kind: str, originals, mutation) -> str:
    data = mutate(originals[kind], kind, mutation)
    try:
        model = load(kind, originals["root"], data)
    except CheckpointImportError as e:
        message = str(e)
        assert "\n" not in message, message
        assert str(originals["root"] / ("hf" if kind == "hf" else "fuzz.gguf")) in message, message   # names the file
        return "refused"
    params = [np.asarray(x) for x in __import__("jax").tree.leaves(model.params)]
    assert all(np.isfinite(p).all() for p in params), "an imported model holds non-finite weights"
    return "loaded"


@pytest.mark.parametrize("kind", ["hf", "gguf"])
def test_malformed_checkpoints_fail_with_one_line(kind, originals):
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(MUTATIONS)
    def fuzz(mutation):
        TRIED[kind][check_one(kind, originals, mutation)] += 1
    fuzz()
    print(f"importer fuzzing ({kind}): {TRIED[kind]}")
    assert TRIED[kind]["refused"] >= EXAMPLES // 4 and TRIED[kind]["loaded"] >= 1


@pytest.mark.parametrize("kind", ["hf", "gguf"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_are_refused(kind, value, originals):
    """Planted: one weight set to NaN / Inf in the middle of the tensor data."""
    data = mutate(originals[kind], kind, ("nonfinite", value, 12345))
    with pytest.raises(CheckpointImportError, match="non-finite") as e:
        load(kind, originals["root"], data)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, needle", [(b"", "empty"), (bytes(range(256)) * 4, "binary"),
                                          (b"short", "fewer than one sequence")])
def test_probe_text_bad_inputs_are_one_line(text, needle, originals, tmp_path, capsys):
    from jaxsink.cli import main
    (originals["root"] / "hf" / "model.safetensors").write_bytes(originals["hf"])
    path = tmp_path / "text.txt"
    path.write_bytes(text)
    rc = main(["probe", "--hf", str(originals["root"] / "hf"), "--out", str(tmp_path / "out"), "--text", str(path),
               "--seq-len", "16", "--num-sequences", "2", "--no-vocab", "--no-interventions", "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("jaxsink: error:") and needle in err[0], err
    assert not (tmp_path / "out" / "probe.json").exists()
