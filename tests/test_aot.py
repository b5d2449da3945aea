"""`jaxsink compile`: topology names, and ahead-of-time compilation from shapes only (cpu-8 always; TPU
topologies when libtpu is importable)."""
import importlib.util

import pytest

from jaxsink.config import ConfigError
from jaxsink.topology import parse_topology, standard_shape

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


@pytest.mark.parametrize("name,string,chips", [
    ("v5p-8", "v5p:2x2x1", 4), ("v5p-16", "v5p:2x2x2", 8), ("v5p-64", "v5p:2x4x4", 32),
    ("v5p-256", "v5p:4x4x8", 128), ("v5p-1024", "v5p:8x8x8", 512), ("v4-8", "v4:2x2x1", 4),
    ("v4-32", "v4:2x2x4", 16), ("v4-128", "v4:4x4x4", 64), ("v4-256", "v4:4x4x8", 128),
    ("v5e-1", "v5e:1x1", 1), ("v5e-4", "v5e:2x2", 4), ("v5e-8", "v5e:2x4", 8), ("v5e-16", "v5e:4x4", 16),
    ("v5e-256", "v5e:16x16", 256), ("v6e-8", "v6e:2x4", 8), ("v6e-256", "v6e:16x16", 256),
    ("v5p:4x4x12", "v5p:4x4x12", 192), ("V5E:2x2", "v5e:2x2", 4),
])
def test_topology_names_map_to_cloud_tpu_shapes(name, string, chips):
    t = parse_topology(name)
    assert (t.topology_string, t.chips) == (string, chips)


def test_topology_slices_cpu_and_bad_names():
    assert parse_topology("v5e-16", slices=2).chips == 32
    assert parse_topology("cpu-8").chips == 8 and parse_topology("cpu-8").platform == "cpu"
    assert standard_shape(2, 3) == (1, 1, 2)
    for bad, words in [("v5p-12", "power of two"), ("v5p-7", "even"), ("v7x-8", "unknown"),
                       ("v5e:2x2x1", "2 positive"), ("cpu-0", "at least one")]:
        with pytest.raises(ConfigError, match=words):
            parse_topology(bad)
