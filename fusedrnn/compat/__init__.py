"""Other libraries' recurrent calls, computed by fusedrnn.

- ``fusedrnn.compat.flashrnn``: the published flashrnn package's ``flashrnn`` function (1.0.8), a drop-in:
  ``from fusedrnn.compat import flashrnn``.
- ``fusedrnn.compat.xlstm``: the ``xlstm`` package's sLSTM layers (2.0.x) with their recurrence on fusedrnn:
  ``fusedrnn.compat.xlstm.use_fusedrnn(model)``.
- ``fusedrnn.compat.tirex``: TiRex's (``tirex-ts``) sLSTM cells on fusedrnn:
  ``fusedrnn.compat.tirex.use_fusedrnn(model)``.
- ``fusedrnn.compat.torchrl``: TorchRL's ``GRUModule`` / ``LSTMModule`` with episode resets inside the kernels:
  ``fusedrnn.compat.torchrl.use_fusedrnn(module)``.

The xlstm, tirex and torchrl modules import their package on first use only; fusedrnn does not depend on them.
"""

from ._flashrnn import BACKENDS, DTYPES, FUNCTIONS, flashrnn

__all__ = ["flashrnn", "FUNCTIONS", "BACKENDS", "DTYPES"]
