"""The main job: a small multi-head LSTM learns a state-tracking task (running parity) on the fly.

Running parity needs a real recurrent state: the target at step t is the XOR of all bits so far, so
attention-free models without state (and any model that looks at a bounded window) cannot solve it.
The model is trained on short sequences and evaluated on longer ones it never saw.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from . import rnn
from .cells import get_cell


class TinyRNN(nn.Module):
    """Input projection (one GEMM for all steps) -> multi-head recurrence -> per-step readout."""

    def __init__(self, cell: str, num_inputs: int, num_heads: int, head_dim: int, num_outputs: int):
        super().__init__()
        self.cell = get_cell(cell)
        self.num_heads, self.head_dim = num_heads, head_dim
        hidden = num_heads * head_dim
        self.proj = nn.Linear(num_inputs, self.cell.num_gates_x * hidden)
        self.R = nn.Parameter(torch.randn(self.cell.num_gates_r, num_heads, head_dim, head_dim) / head_dim**0.5)
        self.b = nn.Parameter(torch.zeros(self.cell.num_gates_b, num_heads, head_dim))
        self.readout = nn.Linear(hidden, num_outputs)

    def forward(self, inputs: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        B, T, _ = inputs.shape
        x = self.proj(inputs).view(B, T, self.cell.num_gates_x, self.num_heads, self.head_dim)
        y, _ = rnn(x, self.R, self.b, cell=self.cell, backend=backend)
        return self.readout(y.reshape(B, T, -1))


def parity_batch(batch: int, steps: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    bits = torch.randint(0, 2, (batch, steps), device=device)
    targets = torch.cumsum(bits, dim=1) % 2
    return nn.functional.one_hot(bits, 2).float(), targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusedrnn demo", description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=["lstm", "slstm", "gru", "elman"])
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    parser.add_argument("--train-length", type=int, default=24)
    parser.add_argument("--eval-length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=8)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = TinyRNN(args.cell, 2, args.heads, args.head_dim, 2).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    print(f"running parity with a {args.heads}x{args.head_dim} {args.cell} on {device}, backend={args.backend}")
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        inputs, targets = parity_batch(args.batch, args.train_length, device)
        logits = model(inputs, args.backend)
        loss = nn.functional.cross_entropy(logits.reshape(-1, 2), targets.reshape(-1))
        optim.zero_grad()
        loss.backward()
        optim.step()
        if step == 1 or step % 25 == 0:
            print(f"step {step:4d}  loss {loss.item():.4f}  ({time.perf_counter() - start:.1f} s)", flush=True)
    with torch.no_grad():
        inputs, targets = parity_batch(256, args.eval_length, device)
        accuracy = (model(inputs, args.backend).argmax(-1) == targets).float().mean().item()
    print(f"accuracy on length-{args.eval_length} sequences (trained on {args.train_length}): {accuracy:.3f}")
    return 0
