"""configs/tiny_passkey.py with 4 filler sentences per document (about 160 bytes): about two key recalls in
every 320-token training crop instead of one, for a model that did not learn to copy the key at 12
(docs/impact.md); measure with `jaxsink impact --parts passkey --passkey-filler 4`."""
from jaxsink.configs import tiny_passkey


def get_config():
    c = tiny_passkey.get_config()
    c.data.corpus = "passkey_short"
    return c
