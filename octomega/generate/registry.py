"""Backend registry: names -> Generator classes, imported lazily so that `hf` never imports vllm or megatron.

A backend module registers its class on import with ``@register_backend("name")``. ``get_generator`` imports
the module named in ``_BACKEND_MODULES`` the first time a backend is asked for, so a missing optional
dependency (vllm on a CPU machine, megatron-core) only matters to the user who picks that backend.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from octomega.generate.interface import Generator

_REGISTRY: dict[str, type[Generator]] = {}

# Where each built-in backend lives. The megatron backend is contributed separately: its module must call
# @register_backend("megatron") on a Generator subclass that takes a checkpoint path or a live model.
_BACKEND_MODULES: dict[str, str] = {
    "hf": "octomega.generate.hf_backend",
    "vllm": "octomega.generate.vllm_backend",
    "megatron": "octomega.generate.megatron_backend",
}


def register_backend(name: str) -> Callable[[type[Generator]], type[Generator]]:
    """Class decorator: make ``cls`` available as ``get_generator(name, ...)``."""

    def deco(cls: type[Generator]) -> type[Generator]:
        if not (isinstance(cls, type) and issubclass(cls, Generator)):
            raise TypeError(f"register_backend({name!r}) needs a Generator subclass, got {cls!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_backends() -> list[str]:
    """Names a user may pass to get_generator (whether their dependencies are installed or not)."""
    return sorted(set(_BACKEND_MODULES) | set(_REGISTRY))


def backend_class(backend: str) -> type[Generator]:
    if backend not in _REGISTRY:
        module = _BACKEND_MODULES.get(backend)
        if module is None:
            raise ValueError(f"unknown generation backend {backend!r}; choose one of {available_backends()}")
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                raise ValueError(
                    f"generation backend {backend!r} is not available in this install: module {module} is missing"
                ) from e
            raise ValueError(
                f"generation backend {backend!r} needs the package {e.name!r}, which is not installed "
                f"({'pip install -e .[vllm]' if backend == 'vllm' else 'see the README'})"
            ) from e
        if backend not in _REGISTRY:
            raise ValueError(f"module {module} did not register a backend named {backend!r}")
    return _REGISTRY[backend]


def get_generator(backend: str, model: Any, **kw: Any) -> Generator:
    """Build a generator: ``get_generator("hf", "/path/to/hf_dir")``, ``get_generator("hf", model, tokenizer=tok)``,
    ``get_generator("vllm", path, tensor_parallel_size=8)``, ``get_generator("megatron", ckpt_dir)``."""
    return backend_class(backend)(model, **kw)
