"""The jaxsink model: one configurable Transformer (see `transformer.py`)."""
from jaxsink.model.capture import CAPTURE_TYPES, collect
from jaxsink.model.spec import ModelSpec
from jaxsink.model import layout
from jaxsink.model.transformer import (Transformer, abstract_model, apply, apply_hidden, build, count_params, forward,
                                       init_params, map_variables, per_block, per_block_graphdef, split)

__all__ = ["CAPTURE_TYPES", "ModelSpec", "Transformer", "abstract_model", "apply", "apply_hidden", "build", "collect",
           "count_params", "forward", "init_params", "layout", "map_variables", "per_block", "per_block_graphdef", "split"]
