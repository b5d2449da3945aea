"""Data: offline corpora, tokenizers, deterministic batches."""
from jaxsink.data.batches import TokenSplits, eval_batches, split_and_encode, train_batch, unigram_bits_per_byte
from jaxsink.data.corpus import DataError, load_corpus
from jaxsink.data.tokenizer import BPETokenizer, ByteTokenizer, tokenizer_from_json

__all__ = ["BPETokenizer", "ByteTokenizer", "DataError", "TokenSplits", "eval_batches", "load_corpus",
           "split_and_encode", "tokenizer_from_json", "train_batch", "unigram_bits_per_byte"]
