"""An xLSTM stack of sLSTM blocks (the ``xlstm`` package) trained with its recurrence on fusedrnn.

    python examples/xlstm_slstm_stack.py                      # GPU if there is one, else CPU
    python examples/xlstm_slstm_stack.py --device cpu --blocks 2 --embedding 64 --length 32 --steps 20

The model is xlstm's own ``xLSTMBlockStack``; one line switches its sLSTM cells to fusedrnn::

    fusedrnn.compat.xlstm.use_fusedrnn(model)

(``fusedrnn.compat.xlstm.install()`` before building does the same for configs that name xlstm's ``"cuda"``
backend, without compiling its kernels.) The script checks the switched model against xlstm's own backend on one
batch (``vanilla``, or ``--xlstm-backend cuda`` on a GPU with nvcc), then trains it on running parity (the parity
of the bits seen so far: a state-tracking task) and prints the loss and the time per step.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch import nn

import fusedrnn.compat.xlstm


def build_stack(blocks: int, embedding: int, heads: int, backend: str) -> nn.Module:
    from xlstm import xLSTMBlockStack, xLSTMBlockStackConfig
    from xlstm.blocks.slstm.block import sLSTMBlockConfig
    from xlstm.blocks.slstm.layer import sLSTMLayerConfig

    config = xLSTMBlockStackConfig(
        slstm_block=sLSTMBlockConfig(slstm=sLSTMLayerConfig(num_heads=heads, backend=backend)),
        num_blocks=blocks,
        embedding_dim=embedding,
        context_length=1,  # used by mLSTM blocks only
    )
    return xLSTMBlockStack(config)


class ParityModel(nn.Module):
    def __init__(self, stack: nn.Module, embedding: int):
        super().__init__()
        self.embed = nn.Embedding(2, embedding)
        self.stack = stack
        self.readout = nn.Linear(embedding, 2)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        return self.readout(self.stack(self.embed(bits)))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--embedding", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--xlstm-backend", default="vanilla", choices=["vanilla", "cuda"], help="the comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    # bfloat16 autocast on a GPU (the fused kernels' fast path), float32 on the CPU
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    theirs = ParityModel(build_stack(args.blocks, args.embedding, args.heads, args.xlstm_backend), args.embedding)
    theirs = theirs.to(device)
    # xlstm initialises the recurrent weights to zero; a random start makes the check below meaningful
    with torch.no_grad():
        for name, parameter in theirs.named_parameters():
            if "recurrent_kernel" in name:
                parameter.normal_(0.0, (args.embedding // args.heads) ** -0.5)
    model = copy.deepcopy(theirs)
    fusedrnn.compat.xlstm.use_fusedrnn(model)  # the switch

    bits = torch.randint(0, 2, (args.batch, args.length), device=device)
    with torch.no_grad(), autocast:
        difference = (model(bits).float() - theirs(bits).float()).abs().max().item()

    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses, times = [], []
    for _ in range(args.steps):
        bits = torch.randint(0, 2, (args.batch, args.length), device=device)
        target = bits.cumsum(1) % 2
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = nn.functional.cross_entropy(model(bits).flatten(0, 1).float(), target.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    summary = {
        "device": str(device),
        "max_difference_to_xlstm": difference,
        "xlstm_backend": args.xlstm_backend,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "ms_per_step": 1e3 * sorted(times)[len(times) // 2] if times else None,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"xLSTM stack of {args.blocks} sLSTM blocks (embedding {args.embedding}, {args.heads} heads) on {device}")
        print(f"  largest difference to xlstm's {args.xlstm_backend} backend: {difference:.2e}")
        if losses:
            print(
                f"  running parity: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {args.steps} steps, "
                f"{summary['ms_per_step']:.1f} ms per step (median)"
            )
    return summary


if __name__ == "__main__":
    main()
