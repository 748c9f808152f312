"""Drop-in ``torch.nn`` recurrent layers backed by fusedrnn's kernels: ``LSTM``, ``GRU``, ``RNN``, ``SLSTM``."""

from .modules import GRU, LSTM, RNN, SLSTM, RecurrentBase

__all__ = ["LSTM", "GRU", "RNN", "SLSTM", "RecurrentBase"]
