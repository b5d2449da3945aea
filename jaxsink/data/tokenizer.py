"""Tokenizers: bytes (default; no files, vocabulary 256 + BOS) or a byte-level BPE from HF `tokenizers`.

Each tokenizer has a `fingerprint()`: a small JSON dict that identifies it ({"kind": "byte", ...}, or for a BPE
the sha256 of its canonical form), recorded when a run starts training so that a checkpoint is never used
with a tokenizer other than the one it was trained with.
"""
from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np

from jaxsink.data.corpus import DataError

BPE_BOS = "<|bos|>"


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; id 256 is BOS, put at position 0 of every sequence."""
    kind = "byte"
    vocab_size = 257
    bos_id = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        ids = np.asarray(ids).ravel()
        return ids[(ids >= 0) & (ids < 256)].astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def to_json(self) -> dict:
        return {"kind": "byte"}

    def fingerprint(self) -> dict:
        return {"kind": "byte", "vocab_size": self.vocab_size, "bos_id": self.bos_id}


class BPETokenizer:
    """A byte-level BPE trained on the training documents (deterministic), saved as tokenizer.json."""
    kind = "bpe"

    def __init__(self, tok, path=None):
        self._tok, self.path = tok, path
        tok.encode_special_tokens = True  # a literal "<|bos|>" in the text is text, not a second BOS
        self.vocab_size = tok.get_vocab_size()
        self.bos_id = tok.token_to_id(BPE_BOS)

    @classmethod
    def train(cls, texts: list[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BPE_BOS], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        from tokenizers import Tokenizer
        path = pathlib.Path(path)
        if not path.is_file():
            raise DataError(f"tokenizer file {path} does not exist")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exception subclasses for bad JSON
            raise DataError(f"tokenizer file {path} is corrupt ({str(e).splitlines()[0][:120]})") from None
        if tok.token_to_id(BPE_BOS) is None:
            raise DataError(f"tokenizer file {path} has no {BPE_BOS} token")
        return cls(tok, path)

    def save(self, path) -> None:
        self._tok.save(str(path))
        self.path = path

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text).ids, dtype=np.int32)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in np.asarray(ids).ravel()])

    def to_json(self) -> dict:
        return {"kind": "bpe", "path": str(self.path) if self.path else None}

    def fingerprint(self) -> dict:
        """sha256 of the canonical tokenizer.json: what decides the ids (vocabulary, merges, added tokens,
        normalizer, pre-tokenizer, post-processor, decoder) as sorted compact JSON, with merges as pairs, so
        that neither the file's formatting nor a newer `tokenizers` release's extra fields change it."""
        d = json.loads(self._tok.to_str())
        model = d.get("model") or {}
        canonical = {
            "model": {k: model.get(k) for k in ("type", "vocab", "unk_token", "continuing_subword_prefix",
                                                "end_of_word_suffix", "byte_fallback")},
            "merges": [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.get("merges", [])],
            "added_tokens": sorted([t["id"], t["content"], bool(t.get("special"))]
                                   for t in d.get("added_tokens") or []),
            **{k: d.get(k) for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder")},
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return {"kind": "bpe", "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                "vocab_size": self.vocab_size, "bos_id": self.bos_id}


FINGERPRINT_KEYS = ("kind", "sha256", "vocab_size", "bos_id")


def same_tokenizer(a: dict, b: dict) -> bool:
    """Whether two fingerprints name the same tokenizer."""
    return all(a.get(k) == b.get(k) for k in FINGERPRINT_KEYS)


def describe_fingerprint(fp: dict | None) -> str:
    """One short phrase: `bpe sha256:1a2b3c4d5e6f7a8b (vocab 4096, BOS 0)` or `byte (vocab 257, BOS 256)`."""
    if not isinstance(fp, dict) or "kind" not in fp:
        return f"an unrecognised fingerprint {json.dumps(fp)}"
    digest = f" sha256:{str(fp['sha256'])[:16]}" if fp.get("sha256") else ""
    return f"{fp['kind']}{digest} (vocab {fp.get('vocab_size')}, BOS {fp.get('bos_id')})"


def tokenizer_from_json(d: dict, workdir=None):
    """Inverse of `to_json`; a BPE path is looked up in `workdir` when it is not absolute."""
    if d.get("kind") == "byte":
        return ByteTokenizer()
    if d.get("kind") == "bpe":
        path = pathlib.Path(d.get("path") or "tokenizer.json")
        if workdir is not None and not path.is_absolute():
            path = pathlib.Path(workdir) / path
        return BPETokenizer.load(path)
    raise DataError(f"unknown tokenizer description {json.dumps(d)}")
