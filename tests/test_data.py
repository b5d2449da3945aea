"""Data package: real offline corpora, tokenizers, deterministic batches and one-line DataErrors."""
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsink.data import (BPETokenizer, ByteTokenizer, DataError, TokenSplits, eval_batches, load_corpus,
                          split_and_encode, tokenizer_from_json, train_batch, unigram_bits_per_byte)

BOS = ByteTokenizer.bos_id


@pytest.fixture(scope="module")
def shakespeare():
    return load_corpus("shakespeare")


@pytest.fixture(scope="module")
def kjv():
    return load_corpus("kjv")


# ---------------------------------------------------------------- corpora

def test_shakespeare_is_big_clean_text(shakespeare):
    text = "".join(shakespeare)
    assert len(shakespeare) >= 38 and len(text) > 4_000_000
    assert all(doc.strip() for doc in shakespeare)
    for marker in ("**", "*", "_", "\\[", "#", "  \n"):
        assert marker not in text, marker
    hamlet = next(doc for doc in shakespeare if doc.startswith("Hamlet\n"))
    assert "BERNARDO\nWho's there?\n" in hamlet            # speaker line kept, question on its own line
    assert "\nEnter Ghost\n" in hamlet                     # stage direction kept as plain words


def test_kjv_is_big_running_text(kjv):
    assert len(kjv) == 66 and sum(map(len, kjv)) > 3_500_000
    assert kjv[0].startswith("In the beginning God created the heaven and the earth. And the earth was")
    assert kjv[-1].rstrip().endswith("Amen.")


def test_english_is_shakespeare_then_kjv(shakespeare, kjv):
    assert load_corpus("english") == shakespeare + kjv   # same order on every call


def test_path_specs(tmp_path):
    (tmp_path / "one.txt").write_text("first file\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "two.md").write_text("second ü\n", encoding="utf-8")
    (tmp_path / "sub" / "skip.bin").write_bytes(b"\x00\x01")            # neither .txt nor .md: ignored
    (tmp_path / "lines.jsonl").write_text('{"text": "a"}\n\n{"text": "b", "id": 2}\n', encoding="utf-8")
    assert load_corpus(str(tmp_path / "one.txt")) == ["first file\n"]
    assert load_corpus(str(tmp_path)) == ["first file\n", "second ü\n"]
    assert load_corpus(str(tmp_path / "lines.jsonl")) == ["a", "b"]
    assert load_corpus(f"{tmp_path / 'one.txt'} + {tmp_path / 'lines.jsonl'}") == ["first file\n", "a", "b"]


def _folder(tmp_path, *empty_files):
    path = tmp_path / "folder"
    path.mkdir()
    for name in empty_files:
        (path / name).write_text("")
    return path


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


BAD_INPUTS = {
    "missing path": lambda d: d / "nope.txt",
    "empty file": lambda d: _write(d, "empty.txt", ""),
    "blank file": lambda d: _write(d, "blank.md", " \n\n"),
    "empty folder": lambda d: _folder(d),
    "folder of empty files": lambda d: _folder(d, "a.txt", "b.md"),
    "NUL bytes": lambda d: _write(d, "binary.txt", b"text\x00more"),
    "not UTF-8": lambda d: _write(d, "latin1.txt", "caf\xe9".encode("latin-1")),
    "jsonl not JSON": lambda d: _write(d, "bad.jsonl", '{"text": "ok"}\n{"text": oops}\n'),
    "jsonl not an object": lambda d: _write(d, "list.jsonl", '["text"]\n'),
    "jsonl without text": lambda d: _write(d, "notext.jsonl", '{"body": "x"}\n'),
    "jsonl text not a string": lambda d: _write(d, "num.jsonl", '{"text": 3}\n'),
    "jsonl empty": lambda d: _write(d, "empty.jsonl", "\n"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_error_naming_the_file(tmp_path, case):
    path = BAD_INPUTS[case](tmp_path)
    with pytest.raises(DataError) as err:
        load_corpus(str(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message


def test_folder_with_binary_file_names_that_file(tmp_path):
    _write(tmp_path, "a.txt", "fine\n")
    _write(tmp_path, "b.txt", b"\xff\xfe\x00")
    with pytest.raises(DataError, match="b.txt"):
        load_corpus(str(tmp_path))


def test_jsonl_error_names_the_line(tmp_path):
    path = _write(tmp_path, "bad.jsonl", '{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=f"{path}:2 "):
        load_corpus(str(path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path):
    path = _write(tmp_path, "secret.txt", "hidden")
    path.chmod(0)
    with pytest.raises(DataError, match="cannot read") as err:
        load_corpus(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux /proc")
def test_read_error_becomes_data_error():
    """Any OSError while reading (here EIO, which root gets too) is a DataError naming the file."""
    with pytest.raises(DataError, match="cannot read /proc/self/mem"):
        load_corpus("/proc/self/mem")


@pytest.mark.parametrize("spec", ["nonesuch", "shakespeare+", "kjv++kjv"])
def test_bad_spec(spec):
    with pytest.raises(DataError) as err:
        load_corpus(spec)
    assert "\n" not in str(err.value) and repr(spec) in str(err.value)


# ---------------------------------------------------------------- tokenizers

@settings(max_examples=100, deadline=None)
@given(st.text())
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and len(ids) == len(text.encode("utf-8")) and (ids < 256).all()
    assert tok.decode(ids) == text
    assert tok.decode(np.concatenate([[BOS], ids])) == text     # BOS is not text


SMALL_TEXT = ("Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
              "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date;\n") * 20


def test_bpe_round_trip_and_save_load(tmp_path):
    tok = BPETokenizer.train([SMALL_TEXT], vocab_size=300)
    assert tok.vocab_size == 300 and 0 <= tok.bos_id < 300
    unseen = "  Naïve café — 東京 \t<|bos|>\n\nsummer's day"
    for text in (SMALL_TEXT, unseen):
        ids = tok.encode(text)
        assert ids.dtype == np.int32 and tok.decode(ids) == text
        assert tok.bos_id not in ids                                  # a literal "<|bos|>" is just text
    assert len(tok.encode(SMALL_TEXT)) < 0.75 * len(SMALL_TEXT.encode())   # merges really compress
    again = BPETokenizer.train([SMALL_TEXT], vocab_size=300)
    np.testing.assert_array_equal(again.encode(unseen), tok.encode(unseen))   # training is deterministic

    tok.save(tmp_path / "tokenizer.json")
    loaded = BPETokenizer.load(tmp_path / "tokenizer.json")
    np.testing.assert_array_equal(loaded.encode(SMALL_TEXT), tok.encode(SMALL_TEXT))
    assert (loaded.vocab_size, loaded.bos_id) == (tok.vocab_size, tok.bos_id)
    from_json = tokenizer_from_json(json.loads(json.dumps(tok.to_json())))
    np.testing.assert_array_equal(from_json.encode(unseen), tok.encode(unseen))


def test_tokenizer_from_json():
    assert isinstance(tokenizer_from_json(ByteTokenizer().to_json()), ByteTokenizer)
    with pytest.raises(DataError):
        tokenizer_from_json({"kind": "sentencepiece"})


def test_bpe_relative_path_is_found_in_workdir(tmp_path):
    BPETokenizer.train([SMALL_TEXT], vocab_size=300).save(tmp_path / "tokenizer.json")
    tok = tokenizer_from_json({"kind": "bpe", "path": "tokenizer.json"}, workdir=tmp_path)
    assert tok.decode(tok.encode("summer")) == "summer"


def test_tokenizer_fingerprints(tmp_path):
    """The identity a run records: equal for the same tokenizer however its file is formatted (and with the
    older "a b" merge strings), different for a BPE trained on other text; described in one short phrase."""
    from jaxsink.data.tokenizer import describe_fingerprint, same_tokenizer
    assert ByteTokenizer().fingerprint() == {"kind": "byte", "vocab_size": 257, "bos_id": 256}
    assert describe_fingerprint(ByteTokenizer().fingerprint()) == "byte (vocab 257, BOS 256)"
    tok = BPETokenizer.train([SMALL_TEXT], vocab_size=300)
    fp = tok.fingerprint()
    assert fp["kind"] == "bpe" and len(fp["sha256"]) == 64 and (fp["vocab_size"], fp["bos_id"]) == (300, tok.bos_id)
    assert BPETokenizer.train([SMALL_TEXT], vocab_size=300).fingerprint() == fp
    tok.save(tmp_path / "tokenizer.json")
    assert BPETokenizer.load(tmp_path / "tokenizer.json").fingerprint() == fp
    d = json.loads((tmp_path / "tokenizer.json").read_text())
    d["model"]["merges"] = [" ".join(m) for m in d["model"]["merges"]]
    (tmp_path / "reformatted.json").write_text(json.dumps(d, indent=3, sort_keys=True))
    assert BPETokenizer.load(tmp_path / "reformatted.json").fingerprint() == fp
    other = BPETokenizer.train([SMALL_TEXT.upper()], vocab_size=300).fingerprint()
    assert other["vocab_size"] == fp["vocab_size"] and not same_tokenizer(other, fp)
    assert not same_tokenizer(ByteTokenizer().fingerprint(), fp)
    assert describe_fingerprint(fp) == f"bpe sha256:{fp['sha256'][:16]} (vocab 300, BOS {tok.bos_id})"


@pytest.mark.parametrize("content", [None, "{not json", '{"model": 1}'])
def test_bpe_load_missing_or_corrupt(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as err:
        BPETokenizer.load(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


# ---------------------------------------------------------------- splits

def test_split_covers_every_document_on_word_boundaries():
    rng = np.random.default_rng(0)
    words = ["thee", "thou", "art", "summer", "day", "lovely"]
    docs = ["\n".join(" ".join(rng.choice(words, size=12)) for _ in range(n)) for n in (30, 80, 200)]
    tok = ByteTokenizer()
    parts = []
    for doc in docs:
        one = split_and_encode([doc], tok, heldout_fraction=0.1)
        train, held = tok.decode(one.train), tok.decode(one.heldout)
        assert train + held == doc and train and held
        assert 0.07 < len(held) / len(doc) < 0.13
        assert train[-1] in " \n"                                   # no word cut in half
        parts.append((train, held))
    splits = split_and_encode(docs, tok, heldout_fraction=0.1)
    assert tok.decode(splits.train) == "\n\n".join(train for train, _ in parts)
    assert tok.decode(splits.heldout) == "\n\n".join(held for _, held in parts)
    assert splits.heldout_bytes == len(splits.heldout) and splits.train_bytes == len(splits.train)


def test_split_rejects_bad_fraction():
    with pytest.raises(DataError):
        split_and_encode(["some text"], ByteTokenizer(), heldout_fraction=1.0)


def test_unigram_bits_per_byte_of_english(shakespeare):
    splits = split_and_encode(shakespeare, ByteTokenizer())
    assert 0.04 < len(splits.heldout) / (len(splits.train) + len(splits.heldout)) < 0.06
    assert 4.0 < unigram_bits_per_byte(splits, ByteTokenizer.vocab_size) < 5.5


def test_unigram_bits_per_byte_counts_bytes_not_tokens():
    train = np.array([0, 0, 1, 1], np.int32)
    splits = TokenSplits(train=train, heldout=np.array([0, 1], np.int32), heldout_bytes=4, train_bytes=4)
    # add-one over a vocabulary of 2: p = 3/6 each -> 1 bit per token, 2 tokens over 4 bytes
    assert unigram_bits_per_byte(splits, vocab_size=2) == pytest.approx(0.5)


# ---------------------------------------------------------------- batches

TOKENS = np.arange(1000, dtype=np.int32) % 251


def _batch(seed=0, step=0, tokens=TOKENS, seq_len=16):
    return train_batch(tokens, seed=seed, step=step, batch_size=8, seq_len=seq_len, bos_id=BOS)


def test_train_batch_is_a_pure_function_of_seed_and_step():
    inputs, targets = _batch(seed=3, step=7)
    again = _batch(seed=3, step=7)
    np.testing.assert_array_equal(inputs, again[0])
    np.testing.assert_array_equal(targets, again[1])
    assert not np.array_equal(targets, _batch(seed=3, step=8)[1])
    assert not np.array_equal(targets, _batch(seed=4, step=7)[1])


def test_train_batch_layout():
    tokens = np.arange(1000, dtype=np.int32)
    inputs, targets = _batch(tokens=tokens)
    assert inputs.shape == targets.shape == (8, 16) and inputs.dtype == targets.dtype == np.int32
    assert (inputs[:, 0] == BOS).all()
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    np.testing.assert_array_equal(targets, targets[:, :1] + np.arange(16))   # contiguous crops of the corpus


def test_train_batch_reaches_both_ends():
    tokens = np.arange(17, dtype=np.int32)                          # exactly two possible crops
    starts = {int(_batch(step=s, tokens=tokens)[1][r, 0]) for s in range(4) for r in range(8)}
    assert starts == {0, 1}


def test_train_batch_too_short():
    with pytest.raises(DataError, match="corpus has 16 tokens, shorter than one sequence of 16") as err:
        _batch(tokens=np.arange(16, dtype=np.int32))
    assert "\n" not in str(err.value)


def test_eval_batches_cover_each_chunk_once():
    seq_len, n_chunks = 8, 10
    tokens = np.arange(n_chunks * seq_len + 5, dtype=np.int32)
    batches = list(eval_batches(tokens, seq_len=seq_len, batch_size=4, bos_id=BOS))
    assert len(batches) == 3
    inputs, targets, mask = (np.concatenate(parts) for parts in zip(*batches))
    assert inputs.shape == targets.shape == (12, seq_len) and mask.tolist() == [1] * 10 + [0] * 2
    np.testing.assert_array_equal(targets[:10], tokens[:n_chunks * seq_len].reshape(n_chunks, seq_len))
    assert (inputs[:, 0] == BOS).all()
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    again = np.concatenate([t for _, t, _ in eval_batches(tokens, seq_len=seq_len, batch_size=4, bos_id=BOS)])
    np.testing.assert_array_equal(again, targets)


def test_eval_batches_max_sequences_and_too_short():
    tokens = np.arange(100, dtype=np.int32)
    masks = [m for _, _, m in eval_batches(tokens, seq_len=8, batch_size=4, bos_id=BOS, max_sequences=5)]
    assert [m.tolist() for m in masks] == [[1, 1, 1, 1], [1, 0, 0, 0]]
    with pytest.raises(DataError) as err:
        next(eval_batches(tokens[:7], seq_len=8, batch_size=4, bos_id=BOS))
    assert "\n" not in str(err.value)
