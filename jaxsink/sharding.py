"""Mesh and logical-axis sharding (MaxText-style rules, jax.jit + NamedSharding: what pjit became).

Parameters carry logical axis names (`embed`, `heads`, `mlp`, ...); `mesh.rules` in the config maps each
name to mesh axes of a (`data`, `fsdp`, `tensor`) mesh. A mesh axis that does not divide a dimension is
dropped for that dimension (replicated) instead of failing, as MaxText's indivisible-shape adjustment does.
The mesh's axis type is pinned to `Auto` (GSPMD-style propagation), so the model code needs no per-call
`out_sharding` annotations.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jaxsink.config import ConfigError, mesh_shape
from jaxsink.model import map_variables
from jaxsink.model.partitioning import spec_for

MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all), axis types pinned to Auto."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    n = int(np.prod(shape))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices[:n])


def rules_from_config(mesh_cfg) -> dict[str, tuple[str, ...]]:
    """`{"embed": "fsdp", "batch": "data,fsdp"}` -> `{"embed": ("fsdp",), "batch": ("data", "fsdp")}`."""
    rules = {}
    for name, axes in mesh_cfg.rules.items():
        parts = tuple(a.strip() for a in axes.split(",") if a.strip())
        unknown = [a for a in parts if a not in MESH_AXES]
        if unknown:
            raise ConfigError(f"mesh.rules.{name}: unknown mesh axis {unknown[0]!r}; use {list(MESH_AXES)}")
        rules[name] = parts
    return rules


def param_shardings(abstract_state, rules, mesh) -> dict:
    """NamedSharding for every parameter (nested dict, `split` layout) from its `logical_axes` metadata."""
    def one(var):
        axes = getattr(var, "logical_axes", None) or (None,) * len(var.shape)
        return NamedSharding(mesh, spec_for(axes, var.shape, rules, mesh))
    return map_variables(abstract_state, one)


def batch_sharding(mesh, rules) -> NamedSharding:
    """Batch rows over the `batch` rule's axes (data and fsdp by default), sequence replicated."""
    axes = rules.get("batch", ())
    return NamedSharding(mesh, P(axes if len(axes) > 1 else (axes[0] if axes else None), None))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
