"""Host time per call that ``fusedrnn.compat.flashrnn`` adds to ``fusedrnn.rnn`` for tirex-2's one-step calls.

    PYTHONPATH=. python benchmarks/compat_overhead.py [--device cuda] [--batch 1] [--heads 4] [--head-dim 16]

One sLSTM step per call, flashrnn's tensors in tirex-2's layouts (R "HPGD", b "HGD", states carried) against
``fusedrnn.rnn`` on the same step in fusedrnn's layouts; no gradient. Each time is the minimum over 9 rounds of
the mean of 500 calls (the minimum: the machine's other load only adds).
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch

import fusedrnn
from fusedrnn.compat import flashrnn


def per_call_us(fn, device: torch.device, calls: int = 500, rounds: int = 9) -> float:
    for _ in range(50):
        fn()
    best = float("inf")
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    B, NH, D = args.batch, args.heads, args.head_dim
    backend = "vanilla" if device.type == "cpu" else "cuda"
    config = SimpleNamespace(function="slstm", backend=backend, recurrent_shape="HPGD", bias_shape="HGD")
    Wx = torch.randn(B, 1, 4, NH, D, device=device, dtype=dtype)
    R = (torch.randn(NH, D, 4, D, device=device) * D**-0.5).to(dtype)
    b = torch.randn(NH, 4, D, device=device, dtype=dtype)
    states = torch.zeros(4, B, 1, NH, D, device=device, dtype=dtype)
    R_ours, b_ours = R.permute(2, 0, 3, 1).contiguous(), b.permute(1, 0, 2).contiguous()
    ours = "reference" if device.type == "cpu" else "auto"
    with torch.no_grad():
        direct = per_call_us(
            lambda: fusedrnn.rnn(Wx, R_ours, b_ours, states[:, :, 0], cell="slstm", backend=ours), device
        )
        compat = per_call_us(lambda: flashrnn(Wx, R, b, states, config=config), device)
    print(
        f"{device.type}, B={B}, {NH} heads of {D}: fusedrnn.rnn {direct:.1f} us, compat.flashrnn {compat:.1f} us per "
        f"call, overhead {compat - direct:.1f} us"
    )


if __name__ == "__main__":
    main()
