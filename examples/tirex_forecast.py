"""TiRex (the ``tirex-ts`` package) forecasting with its sLSTM blocks on fusedrnn.

    python examples/tirex_forecast.py                                # TiRex's size, random weights
    python examples/tirex_forecast.py --checkpoint NX-AI/TiRex       # the released weights (downloads them)
    python examples/tirex_forecast.py --small --device cpu           # a small model, seconds on a CPU

One line switches a loaded TiRex model to fusedrnn::

    fusedrnn.compat.tirex.use_fusedrnn(model)

Without ``--checkpoint`` the model has TiRex's architecture (12 sLSTM blocks of 512 = 4 heads of 128, patches of
32, context 2048, 9 quantiles) and random weights: the forecasts mean nothing, the comparison with TiRex's own
path and the timings do. The script forecasts synthetic series with TiRex's own path (its ``torch`` backend, or
``--tirex-backend cuda``: xlstm's kernels, nvcc at first use) and with fusedrnn, and prints the largest difference
and the time of each.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

import fusedrnn.compat.tirex

QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
# TiRex's released configuration (its checkpoint's hyper-parameters)
TIREX = dict(embedding_dim=512, num_heads=4, num_blocks=12, patch=32, input_ff_dim=2048, context=2048)
SMALL = dict(embedding_dim=64, num_heads=4, num_blocks=2, patch=16, input_ff_dim=128, context=256)


def random_tirex(
    backend: str, embedding_dim: int, num_heads: int, num_blocks: int, patch: int, input_ff_dim: int, context: int
) -> torch.nn.Module:
    """A TiRexZero with random weights (no download). TiRex leaves its recurrent weights uninitialised."""
    from tirex.models.tirex import TiRexZero

    config = dict(
        input_patch_size=patch,
        output_patch_size=patch,
        quantiles=QUANTILES,
        block_kwargs=dict(embedding_dim=embedding_dim, num_heads=num_heads, num_blocks=num_blocks),
        input_ff_dim=input_ff_dim,
    )
    model = TiRexZero(backend=backend, model_config=config, train_ctx_len=context)
    head_dim = embedding_dim // num_heads
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            scale = head_dim**-0.5 if "recurrent" in name else parameter.shape[-1] ** -0.5
            parameter.copy_(torch.randn_like(parameter) * scale)
    return model.eval()


def synthetic_series(series: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Seasonal series with trend and noise [series, length]."""
    t = torch.arange(length, dtype=torch.float32)
    period = torch.randint(12, 200, (series, 1), generator=generator).float()
    phase = torch.rand(series, 1, generator=generator) * 6.28
    trend = torch.randn(series, 1, generator=generator) * 0.01
    noise = torch.randn(series, length, generator=generator) * 0.2
    return torch.sin(6.28 * t / period + phase) + trend * t + noise


def timed(fn, device: torch.device, repeats: int):
    """fn's result and the median of ``repeats`` timed calls after one warm-up call (seconds), and the first."""
    times = []
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return result, sorted(times[1:])[len(times[1:]) // 2] if repeats else times[0], times[0]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a TiRex checkpoint (hub id or local path); random weights without")
    parser.add_argument("--small", action="store_true", help="a small random model (CI, CPU)")
    parser.add_argument("--series", type=int, default=64)
    parser.add_argument("--context", type=int, help="context length (default: the model's training context)")
    parser.add_argument("--prediction-length", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tirex-backend", default="torch", choices=["torch", "cuda"], help="TiRex's own path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)

    if args.checkpoint:
        from tirex import load_model

        theirs = load_model(args.checkpoint, device=str(device), backend=args.tirex_backend)
        context_length = args.context or theirs.config.train_ctx_len
    else:
        sizes = SMALL if args.small else TIREX
        theirs = random_tirex(args.tirex_backend, **sizes).to(device)
        context_length = args.context or sizes["context"]
    model = fusedrnn.compat.tirex.use_fusedrnn(copy.deepcopy(theirs))  # the switch

    context = synthetic_series(args.series, context_length, torch.Generator().manual_seed(args.seed))
    forecast = lambda m: m.forecast(context, prediction_length=args.prediction_length)[0]  # noqa: E731
    ours, ours_s, ours_first = timed(lambda: forecast(model), device, args.repeats)
    own, own_s, own_first = timed(lambda: forecast(theirs), device, args.repeats)
    scale = max(1.0, own.abs().max().item())
    summary = {
        "device": str(device),
        "series": args.series,
        "context": context_length,
        "quantiles_shape": list(ours.shape),
        "max_difference_relative": (ours - own).abs().max().item() / scale,
        "tirex_backend": args.tirex_backend,
        "tirex_s": own_s,
        "tirex_first_s": own_first,
        "fusedrnn_s": ours_s,
        "fusedrnn_first_s": ours_first,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"TiRex forecast of {args.series} series, context {context_length}, {args.prediction_length} steps "
            f"ahead on {device}: quantiles {tuple(ours.shape)}"
        )
        print(
            f"  largest difference to TiRex's {args.tirex_backend} path: {summary['max_difference_relative']:.2e} "
            "of the forecast's scale"
        )
        print(
            f"  TiRex's {args.tirex_backend} path {1e3 * own_s:.1f} ms, fusedrnn {1e3 * ours_s:.1f} ms (median of "
            f"{args.repeats}; first calls {1e3 * own_first:.0f} / {1e3 * ours_first:.0f} ms)"
        )
    return summary


if __name__ == "__main__":
    main()
