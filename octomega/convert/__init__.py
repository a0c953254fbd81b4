"""Hugging Face <-> Megatron-Core checkpoints of Llama models (the mapping Megatron-Bridge would provide).

    load_hf_into_model(hf_dir, model_chunks)     HF weights into a live model at any TP/PP (init.hf_path)
    export_hf_weights(model_chunks, model_cfg)   (HF name, full tensor) pairs from a live model (RL -> vLLM)
    hf_to_mcore / mcore_to_hf / verify           the `octomega convert` commands (octomega.convert.cli)
"""

from octomega.convert.hf_io import ConvertError  # noqa: F401
from octomega.convert.live import export_hf_weights, load_hf_into_model  # noqa: F401


def __getattr__(name):  # the commands import Megatron's checkpointing: load them on first use
    if name in ("hf_to_mcore", "mcore_to_hf", "verify"):
        from octomega.convert import commands

        return getattr(commands, name)
    raise AttributeError(name)
