"""Train a small fusedrnn model with DistributedDataParallel: multi-head LSTM on running parity.

    torchrun --nproc_per_node=2 examples/ddp_train.py            # one process per GPU (NCCL)
    torchrun --nproc_per_node=2 examples/ddp_train.py --device cpu   # CPU processes (gloo)
    python examples/ddp_train.py --batch 64                       # one process, the same global batch

Every step draws one global batch from a seeded generator and each rank trains on its slice, so a run on N
processes with --batch b follows the same trajectory as one process with --batch N·b (DDP averages the
ranks' gradients; the loss is a mean). ``--out FILE`` writes the global loss of every step as JSON.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist
from torch import nn

import fusedrnn.nn as fnn


class ParityModel(nn.Module):
    def __init__(self, hidden: int, num_heads: int):
        super().__init__()
        self.rnn = fnn.LSTM(2, hidden, num_heads=num_heads, batch_first=True)
        self.readout = nn.Linear(hidden, 2)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(nn.functional.one_hot(bits, 2).float())
        return self.readout(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32, help="sequences per process and step")
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the loss of every step here (JSON), from rank 0")
    args = parser.parse_args(argv)

    distributed = "WORLD_SIZE" in os.environ
    rank, world = 0, 1
    if distributed:
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 products, so runs compare closely

    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = ParityModel(args.hidden, args.heads).to(device)
    if distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(args.seed + 1)
    losses = []
    for step in range(args.steps):
        bits = torch.randint(0, 2, (world * args.batch, args.length), generator=data)  # the global batch
        mine = bits[rank * args.batch : (rank + 1) * args.batch].to(device)
        targets = torch.cumsum(mine, dim=1) % 2
        logits = model(mine)
        loss = nn.functional.cross_entropy(logits.reshape(-1, 2), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        global_loss = loss.detach().clone()
        if distributed:
            dist.all_reduce(global_loss)
            global_loss /= world
        losses.append(global_loss.item())
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:3d}  loss {losses[-1]:.5f}  ({world} process{'es' if world > 1 else ''}, {device.type})")
    if rank == 0 and args.out:
        with open(args.out, "w") as f:
            json.dump({"world_size": world, "losses": losses}, f)
    if distributed:
        # every rank past its last collective before the group goes: a gloo rank that tears down while the
        # other still talks to it aborts ("terminate called without an active exception", seen once in CI)
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
