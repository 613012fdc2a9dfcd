"""impnb: low-precision LLM inference as an executable specification (impnb.reference, NumPy) and a fast GPU
engine (impnb.cuda), kept honest by cross-checks (impnb.ops, backend="check")."""
from __future__ import annotations

import importlib

from .errors import (BackendUnavailable, ConfigError, CrossCheckError, FormatError, ImpnbError, TemplateBudgetError,
                     Unsupported, UnsupportedArchitecture)

__version__ = "0.1.0"

# name -> module that defines it; imported on first use so `import impnb` stays light.
_LAZY = {
    "ops": "impnb.ops",
    "NVFP4Tensor": "impnb.formats",
    "load_checkpoint": "impnb.loaders",
    "load_model": "impnb.api",
    "generate": "impnb.generation",
}

__all__ = ["BackendUnavailable", "ConfigError", "CrossCheckError", "FormatError", "ImpnbError", "TemplateBudgetError",
           "Unsupported", "UnsupportedArchitecture", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if name == "ops" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'impnb' has no attribute {name!r}")
