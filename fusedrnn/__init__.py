"""fusedrnn: fast state-tracking RNNs (LSTM, GRU, Elman, sLSTM) for PyTorch."""

from .api import initial_state, rnn
from .backends import backend_names
from .cells import Cell, cell_names, get_cell, register_cell

__all__ = ["rnn", "initial_state", "Cell", "get_cell", "cell_names", "register_cell", "backend_names"]
__version__ = "0.1.0"
