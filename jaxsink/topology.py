"""Named accelerator topologies for ahead-of-time compilation (`jaxsink compile --topology ...`).

Cloud TPU names count TensorCores for v4 and v5p (two per chip, one "megacore" device per chip: v5p-256 is
128 chips, `v5p:4x4x8`) and chips for v5e and v6e (v5e-16 is 16 chips, `v5e:4x4`). Slice shapes follow
Cloud TPU's (and MaxText's `accelerator_to_spec_map.py`) standard shapes; an explicit `v5p:4x4x8` is taken as
given. `cpu-N` is N simulated CPU devices (no libtpu needed). Chip figures: HBM per chip and bf16 peak
FLOP/s from the Cloud TPU system-architecture pages.
"""
from __future__ import annotations

import dataclasses
import math
import re

from jaxsink.config import ConfigError

GiB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
    generation: str          # v4 | v5e | v5p | v6e
    hbm_bytes: int
    peak_flops: float        # bf16 dense FLOP/s per chip
    cores_per_chip: int      # how the Cloud TPU name counts (v4-8 = 4 chips)
    dims: int                # torus dimensions of the topology string
    chip_config: str         # libtpu chip_config_name


CHIPS = {
    "v4": Chip("v4", 32 * GiB, 275e12, 2, 3, "megacore"),
    "v5p": Chip("v5p", 95 * GiB, 459e12, 2, 3, "megacore"),
    "v5e": Chip("v5e", 16 * GiB, 197e12, 1, 2, "default"),
    "v6e": Chip("v6e", 32 * GiB, 918e12, 1, 2, "default"),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str                # as the user gave it
    platform: str            # tpu | cpu
    chip: Chip | None        # None for cpu
    shape: tuple = ()        # chips per torus dimension (tpu)
    slices: int = 1
    cpu_devices: int = 0

    @property
    def chips_per_slice(self) -> int:
        return math.prod(self.shape) if self.platform == "tpu" else self.cpu_devices

    @property
    def chips(self) -> int:
        return self.chips_per_slice * self.slices

    @property
    def topology_string(self) -> str:
        """What libtpu's `get_topology_desc` takes, e.g. `v5p:4x4x8`."""
        return f"{self.chip.generation}:{'x'.join(map(str, self.shape))}" if self.chip else f"cpu:{self.cpu_devices}"


def standard_shape(chips: int, dims: int) -> tuple:
    """Cloud TPU's standard slice shape for a power-of-two chip count: 4 -> 2x2x1, 8 -> 2x2x2, 16 -> 2x2x4,
    32 -> 2x4x4, 64 -> 4x4x4, 128 -> 4x4x8 (3-D); 4 -> 2x2, 8 -> 2x4, 16 -> 4x4, 32 -> 4x8 (2-D). Growing
    doubles the last of the smallest dimensions."""
    if chips < 1 or chips & (chips - 1):
        raise ConfigError(f"--topology: {chips} chips is not a power of two; give the shape (e.g. v5p:4x4x12)")
    if dims == 3 and chips >= 4:
        shape, n = [2, 2, 1], 4
    else:
        shape, n = [1] * dims, 1
    while n < chips:
        low = min(shape)
        i = max(j for j, s in enumerate(shape) if s == low)
        shape[i] *= 2
        n *= 2
    return tuple(shape)


_NAME = re.compile(r"^(v4|v5p|v5e|v6e)-(\d+)$")
_SHAPE = re.compile(r"^(v4|v5p|v5e|v6e):(\d+(?:x\d+)*)$")


def parse_topology(name: str, slices: int = 1) -> Topology:
    """`v5p-256`, `v5p:4x4x8`, `v5e-16`, `v6e-8`, `v4-32` or `cpu-8` -> Topology (ConfigError otherwise)."""
    name = name.strip().lower()
    if slices < 1:
        raise ConfigError(f"--slices must be >= 1, got {slices}")
    if m := re.fullmatch(r"cpu-(\d+)", name):
        return Topology(name, "cpu", None, slices=slices, cpu_devices=_positive(int(m.group(1)), name))
    if m := _NAME.match(name):
        chip = CHIPS[m.group(1)]
        count = int(m.group(2))
        if count % chip.cores_per_chip:
            raise ConfigError(f"--topology {name}: {chip.generation} counts {chip.cores_per_chip} TensorCores per "
                              f"chip, so the number must be even")
        return Topology(name, "tpu", chip, standard_shape(_positive(count // chip.cores_per_chip, name), chip.dims),
                        slices)
    if m := _SHAPE.match(name):
        chip = CHIPS[m.group(1)]
        shape = tuple(int(s) for s in m.group(2).split("x"))
        if len(shape) != chip.dims or min(shape) < 1:
            raise ConfigError(f"--topology {name}: {chip.generation} needs {chip.dims} positive dimensions")
        return Topology(name, "tpu", chip, shape, slices)
    raise ConfigError(f"unknown --topology {name!r}: use e.g. v5p-256, v5p:4x4x8, v5e-16, v6e-8, v4-32 or cpu-8")


def _positive(n: int, name: str) -> int:
    if n < 1:
        raise ConfigError(f"--topology {name}: needs at least one device")
    return n


LIBTPU_HINT = 'compiling for a TPU topology needs libtpu: pip install -e ".[tpu]"'


def devices(topology: Topology) -> list:
    """The topology's devices: libtpu's abstract TPU devices (no hardware needed), or CPU devices."""
    import jax
    if topology.platform == "cpu":
        return _cpu_devices(jax, topology.chips)
    try:
        import libtpu  # noqa: F401
    except ImportError:
        raise ConfigError(LIBTPU_HINT) from None
    import os
    from jax.experimental import topologies
    # libtpu reads these when it starts; without them it logs (harmless) metadata-server errors
    cores = topology.chips_per_slice * topology.chip.cores_per_chip
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{topology.chip.generation}-{cores}")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")    # compiling only: no chip to guard with a lock
    bounds = tuple(min(2, s) for s in topology.shape) + (1,) * (3 - len(topology.shape))
    desc = topologies.get_topology_desc(platform="tpu", topology_name=topology.topology_string,
                                        chip_config_name=topology.chip.chip_config,
                                        chips_per_host_bounds=bounds, num_slices=topology.slices)
    return list(desc.devices)


def _cpu_devices(jax, n: int) -> list:
    """N CPU devices: asks for them before JAX starts its backend, else uses what it has."""
    try:
        if jax.config.jax_num_cpu_devices < n:
            jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        pass                                   # backend already initialised: use its devices
    have = jax.devices("cpu")
    if len(have) < n:
        raise ConfigError(f"--topology cpu-{n}: this process already started JAX with {len(have)} CPU devices; "
                          "run `jaxsink compile` in a fresh process")
    return have[:n]
