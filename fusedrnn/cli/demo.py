"""The main job: a small multi-head RNN learns a state-tracking task (running parity) on the fly.

Running parity needs a real recurrent state: the target at step t is the XOR of all bits so far (with
``--modulus m``: the count of ones so far, mod m), so models without state, or that look at a bounded window,
cannot solve it. The model trains on short sequences and is tested on longer ones it never saw.

Two presets: ``cpu`` (4 heads x 8, finishes in seconds on two CPU cores) and ``gpu`` (12 heads x 64, hidden
768, longer sequences and a larger batch: the size where the fused kernels matter). ``--preset auto`` picks
``gpu`` when CUDA is available; every option overrides its preset value.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch
from torch import nn

from .. import rnn
from ..backends import Call, select_backend
from ..cells import get_cell
from .args import Parser, at_least, non_negative, positive, positive_float, program
from .args import device as device_arg
from .plotting import pyplot
from .progress import progress

__all__ = ["TinyRNN", "counting_batch", "main", "PRESETS"]

# The two default configurations; both learn parity to accuracy 1.000 on the longer test sequences.
# cpu: 10 seeds checked. A warm-up + cosine schedule slows this small model down (150 steps: 2 of 3 seeds
# still near chance, against > 0.9 at a constant rate).
# gpu: checked on the CPU with the reference backend (the same float32 math as the Triton backend): the
# loss leaves chance level after 70-100 steps, so 400 steps leave a margin. D = 64 is the Triton backend's
# sweet spot (float32 R fits on chip). A peak learning rate of 2e-3 instead of 1e-2 kept the 768-unit model
# at chance for over 230 steps at length 128.
PRESETS: dict[str, dict[str, object]] = {
    "cpu": {
        "cell": "lstm",
        "heads": 4,
        "head_dim": 8,
        "train_length": 24,
        "eval_length": 256,
        "batch": 64,
        "steps": 300,
        "lr": 1e-2,
        "schedule": "constant",
        "clip": 0.0,
    },
    "gpu": {
        "cell": "lstm",
        "heads": 12,
        "head_dim": 64,
        "train_length": 128,
        "eval_length": 2048,
        "batch": 128,
        "steps": 400,
        "lr": 1e-2,
        "schedule": "cosine",
        "clip": 1.0,
    },
}
EVAL_SEQUENCES = 256  # sequences of the final test
EVAL_CHUNK_ELEMENTS = 1 << 28  # x elements per evaluation forward pass (1 GiB in float32): fits small GPUs
CHECKPOINTS = 12  # evaluations on longer sequences during training (the plot's accuracy curve)
# Models up to this hidden size train on one CPU thread: their operations are too small to gain from more,
# and beside other work (a test suite on two cores) OpenMP's waiting threads slowed the cpu preset 60x
# (127 s instead of 2 s for 300 steps).
ONE_THREAD_HIDDEN = 256
WARMUP_FRACTION = 0.05  # "cosine" schedule: linear warm-up over these steps, then decay to FINAL_LR_FRACTION
FINAL_LR_FRACTION = 0.1


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

    def forward(self, inputs: torch.Tensor, backend: str = "auto", dtype: torch.dtype | None = None) -> torch.Tensor:
        """Logits [B, T, num_outputs] for one-hot inputs [B, T, num_inputs]; the recurrence runs in ``dtype``
        (default: the parameters' dtype), e.g. bfloat16 for float32 parameters (mixed precision)."""
        B, T, _ = inputs.shape
        dtype = dtype or self.R.dtype
        x = self.proj(inputs).view(B, T, self.cell.num_gates_x, self.num_heads, self.head_dim)
        y, _ = rnn(x.to(dtype), self.R.to(dtype), self.b.to(dtype), cell=self.cell, backend=backend)
        return self.readout(y.reshape(B, T, -1).to(self.readout.weight.dtype))


def counting_batch(batch: int, steps: int, device, modulus: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random bits as one-hot inputs [B, T, 2] and targets [B, T]: the count of ones so far mod ``modulus``
    (2: running parity)."""
    bits = torch.randint(0, 2, (batch, steps), device=device)
    targets = torch.cumsum(bits, dim=1) % modulus
    return nn.functional.one_hot(bits, 2).float(), targets


def learning_rate(step: int, steps: int, peak: float, schedule: str = "cosine") -> float:
    """``peak`` throughout ("constant"), or a linear warm-up, then cosine decay to FINAL_LR_FRACTION * peak."""
    if schedule == "constant":
        return peak
    warmup = max(1, int(WARMUP_FRACTION * steps))
    if step <= warmup:
        return peak * step / warmup
    done = (step - warmup) / max(1, steps - warmup)
    return peak * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * done)))


@torch.no_grad()
def evaluate(
    model: TinyRNN, sequences: int, length: int, modulus: int, device, backend: str, dtype: torch.dtype, skip: int = 0
) -> tuple[float, float, float]:
    """(accuracy over all positions, over positions >= ``skip``, fraction of sequences entirely right)."""
    per_sequence = length * model.cell.num_gates_x * model.num_heads * model.head_dim
    chunk = max(1, min(sequences, EVAL_CHUNK_ELEMENTS // max(1, per_sequence)))
    correct = correct_beyond = whole = 0.0
    for start in range(0, sequences, chunk):
        n = min(chunk, sequences - start)
        inputs, targets = counting_batch(n, length, device, modulus)
        right = model(inputs, backend, dtype).argmax(-1) == targets  # [n, length]
        correct += right.float().sum().item()
        correct_beyond += right[:, skip:].float().sum().item()
        whole += right.all(dim=1).float().sum().item()
    return correct / (sequences * length), correct_beyond / (sequences * max(1, length - skip)), whole / sequences


def _save_plot(path: str, history: dict[str, list], args: argparse.Namespace) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(history["step"], history["loss"], lw=0.8)
    ax_loss.set(
        yscale="log",
        xlabel="training step",
        ylabel="cross-entropy loss",
        title=f"training loss (length {args.train_length})",
    )
    ax_acc.plot(history["step"], history["train_acc"], lw=0.8, alpha=0.6, label=f"train (length {args.train_length})")
    ax_acc.plot(history["eval_step"], history["eval_acc"], "o-", label=f"test (length {args.eval_length})")
    ax_acc.axhline(1 / args.modulus, color="gray", ls=":", lw=0.8, label="chance")
    ax_acc.set(xlabel="training step", ylabel="accuracy per position", ylim=(0, 1.02), title="accuracy")
    ax_acc.legend(loc="lower right")
    task = "running parity" if args.modulus == 2 else f"count mod {args.modulus}"
    fig.suptitle(f"{task}: {args.heads}x{args.head_dim} {args.cell}, backend {args.backend_name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"training curves: {os.path.abspath(path)}")


def _time_ms(fn, device: torch.device, reps: int = 3) -> float:
    """Wall milliseconds per call of ``fn`` after one warm-up call (synchronised: GPU work included)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000 / reps


def _compare_with_reference(model: TinyRNN, args: argparse.Namespace, device: torch.device, dtype) -> None:
    """Forward + backward of one training batch on the chosen backend and on the PyTorch loop (reference)."""
    inputs, targets = counting_batch(args.batch, args.train_length, device, args.modulus)

    def step(backend: str):
        def fn():
            model.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(inputs, backend, dtype).flatten(0, 1), targets.flatten())
            loss.backward()

        return fn

    fast, slow = _time_ms(step(args.backend_name), device), _time_ms(step("reference"), device)
    print(
        f"forward + backward of one batch: {args.backend_name} {fast:.1f} ms, reference (PyTorch loop) "
        f"{slow:.1f} ms: {slow / fast:.1f}x"
    )


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog=program("demo"), description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        choices=["auto", *PRESETS],
        default="auto",
        help="default sizes: 'gpu' when CUDA is available, else 'cpu' (default: auto)",
    )
    parser.add_argument("--cell", choices=["lstm", "slstm", "gru", "elman"])
    parser.add_argument("--steps", type=positive, help="training steps")
    parser.add_argument("--train-length", type=positive, help="sequence length in training")
    parser.add_argument("--eval-length", type=positive, help="sequence length of the test (longer than in training)")
    parser.add_argument("--batch", type=positive, help="sequences per training step")
    parser.add_argument("--heads", type=positive, help="number of heads NH")
    parser.add_argument("--head-dim", type=positive, help="head size D (hidden size = NH * D)")
    parser.add_argument("--lr", type=positive_float, help="(peak) learning rate of Adam")
    parser.add_argument(
        "--schedule",
        choices=["constant", "cosine"],
        help="learning rate: constant, or warm-up over 5%% of the steps, then cosine decay to a tenth",
    )
    parser.add_argument("--clip", type=non_negative, help="clip the gradient norm at this value (0: no clipping)")
    parser.add_argument("--modulus", type=at_least(2), default=2, help="count ones mod this (2: parity; default 2)")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="dtype of the recurrence (parameters stay float32; default float32)",
    )
    parser.add_argument("--backend", default="auto", help="fusedrnn backend (default: auto, the fastest available)")
    parser.add_argument("--device", type=device_arg, help="cuda or cpu (default: cuda when available)")
    parser.add_argument(
        "--plot",
        default="fusedrnn-demo.png",
        help="where to save the training curves (PNG; needs matplotlib; '' for none; "
        "default: fusedrnn-demo.png in the current directory)",
    )
    parser.add_argument(
        "--no-compare", action="store_true", help="skip timing one batch on the reference backend for comparison"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = args.preset if args.preset != "auto" else ("gpu" if device.type == "cuda" else "cpu")
    for key, value in PRESETS[preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    dtype = getattr(torch, args.dtype)
    # Once the task is learned, gradients shrink into float32's subnormal range, where CPU arithmetic slows
    # down ~10x (seen with the gpu preset on the CPU: 0.5 s -> 5 s per step); flush them to zero meanwhile.
    flush = device.type == "cpu" and torch.set_flush_denormal(True)
    threads = torch.get_num_threads()
    if device.type == "cpu" and args.heads * args.head_dim <= ONE_THREAD_HIDDEN:
        torch.set_num_threads(1)
    try:
        return _train(args, device, dtype, preset)
    finally:  # this process may go on (tests call main): torch's settings as they were
        torch.set_num_threads(threads)
        if flush:
            torch.set_flush_denormal(False)  # torch's default


def _train(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, preset: str) -> int:
    torch.manual_seed(args.seed)
    model = TinyRNN(args.cell, 2, args.heads, args.head_dim, args.modulus).to(device)
    call = Call(get_cell(args.cell), args.batch, args.train_length, args.heads, args.head_dim, dtype, device, True)
    try:
        args.backend_name = select_backend(args.backend, call).name
    except ValueError as error:
        print(f"{program('demo')}: error: {error}", file=sys.stderr)
        return 2
    optim = torch.optim.Adam(model.parameters(), lr=args.lr)
    task = "running parity" if args.modulus == 2 else f"counting mod {args.modulus}"
    print(
        f"{task} with a {args.heads}x{args.head_dim} {args.cell} (hidden {args.heads * args.head_dim}, "
        f"{sum(p.numel() for p in model.parameters())} parameters) on {device}, {args.dtype}, "
        f"backend {args.backend_name}, preset {preset}"
    )
    print(
        f"training: {args.steps} steps of {args.batch} sequences of length {args.train_length}; "
        f"test: length {args.eval_length}"
    )

    history: dict[str, list] = {"step": [], "loss": [], "train_acc": [], "eval_step": [], "eval_acc": []}
    checkpoints = {max(1, round(args.steps * k / CHECKPOINTS)) for k in range(1, CHECKPOINTS + 1)}
    bar = progress(args.steps, "training")
    start = time.perf_counter()
    first_step_s = eval_s = 0.0
    for step in range(1, args.steps + 1):
        for group in optim.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.schedule)
        inputs, targets = counting_batch(args.batch, args.train_length, device, args.modulus)
        logits = model(inputs, args.backend_name, dtype)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optim.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:  # a bad batch early in a large model's training must not blow the recurrence up
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optim.step()
        loss_value = loss.item()  # synchronises: the step's GPU work is done
        if step == 1:
            first_step_s = time.perf_counter() - start
        history["step"].append(step)
        history["loss"].append(loss_value)
        history["train_acc"].append((logits.argmax(-1) == targets).float().mean().item())
        bar.set_postfix_str(f"loss {loss_value:.4f}", refresh=False)
        bar.update()
        if step == 1 or step in checkpoints:
            eval_start = time.perf_counter()
            eval_acc = evaluate(model, 64, args.eval_length, args.modulus, device, args.backend_name, dtype)[0]
            eval_s += time.perf_counter() - eval_start
            history["eval_step"].append(step)
            history["eval_acc"].append(eval_acc)
            bar.write(
                f"step {step:5d}  loss {loss_value:.4f}  accuracy: train {history['train_acc'][-1]:.3f}, "
                f"length {args.eval_length} {eval_acc:.3f}  ({time.perf_counter() - start:.1f} s)"
            )
    bar.close()
    elapsed = time.perf_counter() - start
    # the speed of training proper: without the first step (kernel compilation) and the test evaluations
    steady_s = max(elapsed - first_step_s - eval_s, 1e-9)
    steady_steps = args.steps - 1
    print(
        f"trained {args.steps} steps in {elapsed:.1f} s (first step, kernel compilation included: "
        f"{first_step_s:.2f} s; test evaluations: {eval_s:.1f} s)"
    )
    if steady_steps:
        print(
            f"training speed: {steady_steps / steady_s:.1f} steps/s, "
            f"{steady_steps * args.batch * args.train_length / steady_s:,.0f} tokens/s"
        )

    accuracy, beyond, whole = evaluate(
        model, EVAL_SEQUENCES, args.eval_length, args.modulus, device, args.backend_name, dtype, skip=args.train_length
    )
    print(f"accuracy on length-{args.eval_length} sequences (trained on length {args.train_length}): {accuracy:.3f}")
    beyond_text = (
        f"positions {args.train_length + 1}..{args.eval_length} (beyond the training length): {beyond:.3f}; "
        if args.eval_length > args.train_length
        else ""
    )
    print(f"  {beyond_text}sequences entirely right: {whole:.3f} ({EVAL_SEQUENCES} sequences)")
    if args.backend_name != "reference" and not args.no_compare:
        _compare_with_reference(model, args, device, dtype)
    if args.plot:
        _save_plot(args.plot, history, args)
    return 0
