"""GRU: x and R gates (r, z, n); b gates (r, z, n_in, n_hidden); state h. The function of torch.nn.GRU.

The candidate's recurrent part keeps its own bias inside the reset gate's product, as torch does:
n = tanh(x_n + b_n_in + r * (R_n h + b_n_hidden)).
"""

import torch

from .registry import Cell, register_cell


def gru_step(
    x_t: torch.Tensor, r_t: torch.Tensor, b: torch.Tensor, states: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    (h,) = states
    x_r, x_z, x_n = x_t.unbind(1)
    rh_r, rh_z, rh_n = r_t.unbind(1)
    b_r, b_z, b_n_in, b_n_hidden = b.unbind(0)
    r = torch.sigmoid(x_r + rh_r + b_r)
    u = torch.sigmoid(x_z + rh_z + b_z)
    n = torch.tanh(x_n + b_n_in + r * (rh_n + b_n_hidden))
    return ((1 - u) * n + u * h,)


GRU = register_cell(
    Cell(
        name="gru",
        gates_x=("r", "z", "n"),
        gates_r=("r", "z", "n"),
        gates_b=("r", "z", "n_in", "n_hidden"),
        states=("h",),
        initial=(0.0,),
        step=gru_step,
        x_slots=(0, 1, 2),
        r_slots=(0, 1, 3),
    )
)
