"""LSTM: gates (i, f, z, o), states (h, c); the function of torch.nn.LSTM with b = b_ih + b_hh."""

import torch

from .registry import Cell, register_cell


def lstm_step(
    x_t: torch.Tensor, r_t: torch.Tensor, b: torch.Tensor, states: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    _, c = states
    pre = x_t + r_t + b  # [B, 4, NH, D]
    i, f, z, o = pre.unbind(1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(z)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


LSTM = register_cell(
    Cell(
        name="lstm",
        gates_x=("i", "f", "z", "o"),
        gates_r=("i", "f", "z", "o"),
        gates_b=("i", "f", "z", "o"),
        states=("h", "c"),
        initial=(0.0, 0.0),
        step=lstm_step,
        x_slots=(0, 1, 2, 3),
        r_slots=(0, 1, 2, 3),
    )
)
