"""The generated Bigram-Backcopy corpus follows its rule exactly and is deterministic."""
from jaxsink.data import load_corpus
from jaxsink.data.synthetic import ALPHABET, TRIGGERS, bigram_backcopy


def test_backcopy_rule_holds_and_triggers_never_repeat():
    docs = bigram_backcopy(n_docs=3, doc_chars=2000, seed=5)
    assert len(docs) == 3 and all(len(d) == 2000 and set(d) <= set(ALPHABET) for d in docs)
    copies = 0
    for d in docs:
        for i in range(2, len(d)):
            if d[i - 1] in TRIGGERS:
                assert d[i] == d[i - 2] and d[i] not in TRIGGERS
                copies += 1
    assert 0.01 < copies / 6000 < 0.2                      # triggers are rare but present


def test_deterministic_and_registered_as_a_corpus():
    assert bigram_backcopy(n_docs=2, doc_chars=50, seed=1) == bigram_backcopy(n_docs=2, doc_chars=50, seed=1)
    assert bigram_backcopy(n_docs=1, doc_chars=50, seed=1) != bigram_backcopy(n_docs=1, doc_chars=50, seed=2)
    assert load_corpus("bigram_backcopy")[0] == bigram_backcopy()[0]
