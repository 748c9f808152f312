"""fusedrnn: fast state-tracking RNNs (LSTM, GRU, Elman, sLSTM) for PyTorch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["rnn", "initial_state", "Cell", "get_cell", "cell_names", "register_cell", "backend_names", "compat", "nn"]
__version__ = "0.1.0"

# Imported on first use, so that the torch-free subpackage fusedrnn.tune (the constraint solver and its
# command line) starts in milliseconds instead of waiting for torch.
_LAZY = {
    "rnn": ".api",
    "initial_state": ".api",
    "backend_names": ".backends",
    "Cell": ".cells",
    "cell_names": ".cells",
    "get_cell": ".cells",
    "register_cell": ".cells",
    "compat": ".compat",
    "nn": ".nn",  # submodules: the name maps to itself
}

if TYPE_CHECKING:
    from . import compat, nn
    from .api import initial_state, rnn
    from .backends import backend_names
    from .cells import Cell, cell_names, get_cell, register_cell


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fusedrnn' has no attribute {name!r}")
    imported = importlib.import_module(module, __name__)
    value = imported if module == f".{name}" else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
