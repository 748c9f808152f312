"""Drop-in ``torch.nn`` recurrent layers and cells backed by fusedrnn's kernels: ``LSTM``, ``GRU``, ``RNN``,
``SLSTM``, ``LSTMCell``, ``GRUCell``, ``RNNCell``."""

from .cells import GRUCell, LSTMCell, RecurrentCellBase, RNNCell
from .modules import GRU, LSTM, RNN, SLSTM, RecurrentBase

__all__ = ["LSTM", "GRU", "RNN", "SLSTM", "LSTMCell", "GRUCell", "RNNCell", "RecurrentBase", "RecurrentCellBase"]
