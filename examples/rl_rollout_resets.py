"""A recurrent policy trained on replay batches that hold several episodes per row, with resets inside the kernels.

    python examples/rl_rollout_resets.py                      # GPU if there is one: B = 16, T = 512, 8 heads of 64
    python examples/rl_rollout_resets.py --device cpu --batch 4 --length 32 --hidden 32 --heads 4 --steps 30

A rollout buffer cuts the environment's stream into rows of T steps; an episode may end and the next begin anywhere
in a row. ``is_init`` (TorchRL's name; fusedrnn's ``resets``) marks each episode's first step, and the recurrent
state must start afresh there. The block-diagonal GRU here (``num_heads``: DreamerV3's world models use such GRUs)
takes the flags in one call::

    y, h = gru(obs, resets=is_init)

The toy task needs the reset: the target at each step is the running count of 1s observed since the episode began,
which a state carried across an episode boundary gets wrong. The script first checks that one call with resets
equals running each episode alone, then trains on the task and prints the loss. TorchRL users switch their own
``GRUModule`` / ``LSTMModule`` with ``fusedrnn.compat.torchrl.use_fusedrnn`` (docs/resets.md).
"""

from __future__ import annotations

import argparse
import json

import torch

import fusedrnn.nn


def rollout(batch: int, length: int, mean_episode: float, generator: torch.Generator, device: torch.device):
    """Observations [B, T, 1] (random bits), is_init [B, T] (episode starts, the first step of every row included:
    a row starts a fresh episode here) and targets [B, T, 1] (1s seen since the episode's start, over its mean)."""
    obs = torch.randint(0, 2, (batch, length, 1), generator=generator).float()
    is_init = torch.rand(batch, length, generator=generator) < 1.0 / mean_episode
    is_init[:, 0] = True
    counts = torch.zeros(batch, length, 1)
    running = torch.zeros(batch, 1)
    for t in range(length):
        running = torch.where(is_init[:, t, None], 0.0, running) + obs[:, t]
        counts[:, t] = running
    return obs.to(device), is_init.to(device), (counts / (mean_episode / 2)).to(device)


def episodes_alone(gru: torch.nn.Module, obs: torch.Tensor, is_init: torch.Tensor) -> torch.Tensor:
    """The outputs of running each episode on its own, from a zero state: what resets must reproduce."""
    out = torch.empty(*obs.shape[:2], gru.hidden_size, device=obs.device, dtype=obs.dtype)
    for row in range(obs.shape[0]):
        starts = is_init[row].nonzero().flatten().tolist() + [obs.shape[1]]
        for start, stop in zip(starts[:-1], starts[1:]):
            out[row, start:stop] = gru(obs[row : row + 1, start:stop])[0][0]
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--mean-episode", type=float, default=32.0)
    parser.add_argument("--steps", type=int, default=200, help="training steps")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)

    gru = fusedrnn.nn.GRU(1, args.hidden, batch_first=True, num_heads=args.heads, device=device)
    head = torch.nn.Linear(args.hidden, 1, device=device)

    obs, is_init, _ = rollout(args.batch, args.length, args.mean_episode, generator, device)
    with torch.no_grad():
        together = gru(obs, resets=is_init)[0]
        alone = episodes_alone(gru, obs, is_init)
    difference = (together - alone).abs().max().item()
    print(f"one call with resets against each episode alone: largest difference {difference:.2e}")

    optimizer = torch.optim.Adam([*gru.parameters(), *head.parameters()], lr=3e-3)
    losses = []
    for step in range(args.steps):
        obs, is_init, target = rollout(args.batch, args.length, args.mean_episode, generator, device)
        y, _ = gru(obs, resets=is_init)
        loss = torch.nn.functional.mse_loss(head(y), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    summary = {"max_difference_to_episodes_alone": difference, "first_loss": losses[0], "last_loss": losses[-1]}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
