"""Pretrained checkpoints (HF safetensors folders, llama.cpp GGUF files) imported into the one jaxsink model
as a `jaxsink.model.loaded.LoadedModel`, ready for the probe."""
from jaxsink.importers.gguf import load_gguf
from jaxsink.importers.hf import CheckpointImportError, HFTokenizer, load_hf, spec_from_config

__all__ = ["CheckpointImportError", "HFTokenizer", "load_gguf", "load_hf", "spec_from_config"]
