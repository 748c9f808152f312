"""Elman: one gate z, state h: h' = tanh(x + R h + b), torch.nn.RNN with nonlinearity='tanh'."""

import torch

from .registry import Cell, register_cell


def elman_step(
    x_t: torch.Tensor, r_t: torch.Tensor, b: torch.Tensor, states: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    return (torch.tanh(x_t[:, 0] + r_t[:, 0] + b[0]),)


ELMAN = register_cell(
    Cell(
        name="elman",
        gates_x=("z",),
        gates_r=("z",),
        gates_b=("z",),
        states=("h",),
        initial=(0.0,),
        step=elman_step,
        x_slots=(0,),
        r_slots=(0,),
    )
)
