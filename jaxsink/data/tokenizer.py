"""Tokenizers: bytes (default; no files, vocabulary 256 + BOS) or a byte-level BPE from HF `tokenizers`."""
from __future__ import annotations

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
