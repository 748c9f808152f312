"""sLSTM: gates (i, f, z, o), states (h, c, n, m); exponential input gate stabilised by m.

Element-wise, with pre-activations i~, f~, z~, o~:
    m' = i~                              where n == 0 (a fresh state)
         max(i~, log sigmoid(f~) + m)     elsewhere
    i = exp(i~ - m'),  f = exp(log sigmoid(f~) + m - m')
    c' = f c + i tanh(z~);  n' = max(f n + i, 1);  h' = sigmoid(o~) c' / n'
"""

import torch
import torch.nn.functional as F

from .registry import Cell, register_cell


def slstm_step(
    x_t: torch.Tensor, r_t: torch.Tensor, b: torch.Tensor, states: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    _, c, n, m = states
    pre = x_t + r_t + b  # [B, 4, NH, D]
    i_raw, f_raw, z_raw, o_raw = pre.unbind(1)
    log_f_plus_m = F.logsigmoid(f_raw) + m
    m_new = torch.where(n == 0, i_raw, torch.maximum(i_raw, log_f_plus_m))
    i = torch.exp(i_raw - m_new)
    f = torch.exp(log_f_plus_m - m_new)
    c_new = f * c + i * torch.tanh(z_raw)
    n_new = torch.clamp(f * n + i, min=1.0)
    h_new = torch.sigmoid(o_raw) * c_new / n_new
    return h_new, c_new, n_new, m_new


SLSTM = register_cell(
    Cell(
        name="slstm",
        gates_x=("i", "f", "z", "o"),
        gates_r=("i", "f", "z", "o"),
        gates_b=("i", "f", "z", "o"),
        states=("h", "c", "n", "m"),
        initial=(0.0, 0.0, 0.0, 0.0),
        step=slstm_step,
        x_slots=(0, 1, 2, 3),
        r_slots=(0, 1, 2, 3),
    )
)
