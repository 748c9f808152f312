"""The integrations against the libraries' own fast paths, on one GPU: xLSTM's sLSTM stack and TiRex.

    python benchmarks/bench_integrations.py --out integrations.jsonl    # everything: 1 to 3 min plus two nvcc builds
    python benchmarks/bench_integrations.py --only xlstm --budget-s 170
    python benchmarks/bench_integrations.py --smoke                      # every code path at tiny sizes on a CPU

Every measurement is one JSON line (stdout and ``--out``); a row that fails records its error and the run goes
on. Rows:

- ``xlstm``: a stack of 4 sLSTM blocks (xlstm's ``xLSTMBlockStack``, embedding 768, 4 heads of 192, B = 16,
  T = 1024, bfloat16): fusedrnn (``fusedrnn.compat.xlstm``) against xlstm's ``cuda`` backend, forward and forward +
  backward (the training step less the optimizer's, the same for both), the recurrence alone (one sLSTM cell's
  forward on the pre-activations) and the whole stack; the first call of each (building the stack, one forward and
  one backward: xlstm compiles its kernels with nvcc when it builds, fusedrnn its own with NVRTC at their first
  calls), with empty kernel caches (``--warm-caches`` keeps them); the recurrence's
  share of the stack's time (4 cells' time over the stack's); the largest difference of the two stacks' outputs.
- ``tirex``: TiRex's architecture (12 sLSTM blocks of 4 heads of 128, patches of 32, random weights) forecasting
  64 series with context 2048 (64 tokens), 32 steps ahead: its ``torch`` path, its ``torch`` path compiled (as
  ``load_model(compile=True)`` does), its ``cuda`` path (xlstm's kernels) and fusedrnn; the time inside the sLSTM
  cells (CUDA events around each cell's forward, one extra pass) over the forecast's; differences to TiRex's paths.
- ``calls``: the calls tirex-2 makes through ``fusedrnn.compat.flashrnn`` (one token per call with states carried;
  a whole flipped sequence), time per call against ``fusedrnn.rnn`` on the same tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback

# Empty kernel caches, set before anything compiles: the first calls are what a new user meets.
if "--warm-caches" not in sys.argv:
    _cache = tempfile.mkdtemp(prefix="fusedrnn-bench-cold-")
    for _variable in ("FUSEDRNN_CACHE_DIR", "TRITON_CACHE_DIR", "TORCH_EXTENSIONS_DIR"):
        os.environ[_variable] = os.path.join(_cache, _variable.lower())

import torch  # noqa: E402

import fusedrnn  # noqa: E402
from fusedrnn.timing import median_ms  # noqa: E402

DEVICE = torch.device("cuda")
# --smoke: every code path at tiny sizes on the CPU (xlstm's vanilla backend standing in for its cuda one)
SMOKE = "--smoke" in sys.argv
if SMOKE:
    DEVICE = torch.device("cpu")
    torch.set_num_threads(1)  # tiny tensors: more threads only contend
ROWS: list[dict] = []
STARTED = time.perf_counter()


def emit(row: dict, out) -> None:
    row = {"elapsed_s": round(time.perf_counter() - STARTED, 1), **row}
    ROWS.append(row)
    line = json.dumps(row)
    print(line, flush=True)
    if out is not None:
        out.write(line + "\n")
        out.flush()


def guarded(out, budget_s: float, **keys):
    """A decorator running one measurement: its returned dict (or its error) becomes a row with ``keys``."""

    def wrap(fn):
        if time.perf_counter() - STARTED > budget_s:
            emit({**keys, "error": f"skipped: past the time budget of {budget_s:.0f} s"}, out)
            return None
        try:
            result = fn()
        except Exception as error:  # one failed row must not end the run
            emit({**keys, "error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-1500:]}, out)
            torch.cuda.empty_cache()
            return None
        emit({**keys, **result}, out)
        return result

    return wrap


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def first_call_s(fn) -> tuple[object, float]:
    synchronize()
    start = time.perf_counter()
    result = fn()
    synchronize()
    return result, time.perf_counter() - start


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item()


# --- xLSTM ------------------------------------------------------------------------------------------------------


def xlstm_stack(backend: str, blocks: int, embedding: int, heads: int, context: int, batch: int) -> torch.nn.Module:
    from xlstm import xLSTMBlockStack, xLSTMBlockStackConfig
    from xlstm.blocks.slstm.block import sLSTMBlockConfig
    from xlstm.blocks.slstm.layer import sLSTMLayerConfig
    from xlstm.components.feedforward import FeedForwardConfig

    # xlstm's README configuration of an sLSTM block
    config = xLSTMBlockStackConfig(
        slstm_block=sLSTMBlockConfig(
            # batch_size: a hint xlstm's cuda kernels may use
            slstm=sLSTMLayerConfig(backend=backend, num_heads=heads, conv1d_kernel_size=4, batch_size=batch),
            feedforward=FeedForwardConfig(proj_factor=1.3, act_fn="gelu"),
        ),
        num_blocks=blocks,
        embedding_dim=embedding,
        context_length=context,
    )
    torch.manual_seed(0)  # the same parameters for both stacks
    stack = xLSTMBlockStack(config)
    with torch.no_grad():  # xlstm starts R at zero: random R so that the comparison means something
        for name, parameter in stack.named_parameters():
            if "recurrent_kernel" in name:
                parameter.normal_(0.0, (embedding // heads) ** -0.5)
    return stack.to(DEVICE, torch.bfloat16)


def bench_xlstm(args, out) -> None:
    import fusedrnn.compat.xlstm as compat_xlstm

    B, T, E, NH, blocks = (2, 8, 32, 4, 2) if SMOKE else (16, 1024, 768, 4, 4)
    theirs_backend = "vanilla" if SMOKE else "cuda"
    x = torch.randn(B, T, E, device=DEVICE, dtype=torch.bfloat16)
    pre = torch.randn(B, T, 4 * E, device=DEVICE, dtype=torch.bfloat16)
    stacks: dict[str, torch.nn.Module] = {}
    times: dict[tuple[str, str, str], float] = {}
    base = dict(bench="xlstm", B=B, T=T, embedding=E, heads=NH, blocks=blocks, dtype="bfloat16")

    def build(impl):
        def run():
            def make_and_call():
                if impl == "fusedrnn":
                    compat_xlstm.install()  # cuda-layout cells without nvcc
                    try:
                        stack = xlstm_stack("cuda", blocks, E, NH, T, B)
                    finally:
                        compat_xlstm.uninstall()
                else:
                    stack = xlstm_stack(theirs_backend, blocks, E, NH, T, B)  # cuda: compiles its kernels (nvcc)
                stack(x).float().mean().backward()  # a training step's kernels: forward and backward
                stack.zero_grad(set_to_none=True)
                return stack

            stacks[impl], seconds = first_call_s(make_and_call)
            return {"first_call_s": round(seconds, 3)}

        return run

    for impl in ("fusedrnn", "xlstm-cuda"):
        guarded(out, args.budget_s, **base, impl=impl, part="stack", mode="first call (build + forward + backward)")(
            build(impl)
        )

    for impl, stack in stacks.items():
        cell = stack.blocks[0].xlstm.slstm_cell
        stack.train()  # xlstm's cuda backward runs in training mode only

        def recurrence_fw(cell=cell):
            with torch.no_grad():
                cell(pre)

        pre_grad = pre.detach().clone().requires_grad_(True)

        def recurrence_fwbw(cell=cell):
            out_, _ = cell(pre_grad)
            out_.backward(torch.ones_like(out_))

        def stack_fw(stack=stack):
            with torch.no_grad():
                stack(x)

        def stack_fwbw(stack=stack):
            stack(x).float().mean().backward()

        for part, mode, fn in (
            ("recurrence", "fw", recurrence_fw),
            ("recurrence", "fwbw", recurrence_fwbw),
            ("stack", "fw", stack_fw),
            ("stack", "fwbw", stack_fwbw),
        ):

            def measure(fn=fn, part=part, mode=mode, impl=impl):
                ms = median_ms(fn, reps=args.reps, warmup=2, device=DEVICE)
                times[(impl, part, mode)] = ms
                return {"ms": round(ms, 4)}

            guarded(out, args.budget_s, **base, impl=impl, part=part, mode=mode)(measure)

    for impl in stacks:
        for mode in ("fw", "fwbw"):
            if (impl, "recurrence", mode) in times and (impl, "stack", mode) in times:
                share = blocks * times[(impl, "recurrence", mode)] / times[(impl, "stack", mode)]
                emit({**base, "impl": impl, "part": "recurrence share", "mode": mode, "share": round(share, 3)}, out)
    for part in ("recurrence", "stack"):
        for mode in ("fw", "fwbw"):
            ours, theirs = times.get(("fusedrnn", part, mode)), times.get(("xlstm-cuda", part, mode))
            if ours and theirs:
                emit({**base, "part": part, "mode": mode, "speedup_vs_xlstm_cuda": round(theirs / ours, 3)}, out)

    if len(stacks) == 2 and not SMOKE:  # smoke: the two stacks store R in different layouts

        def compare():
            ours, theirs = stacks["fusedrnn"], stacks["xlstm-cuda"]
            theirs.load_state_dict(ours.state_dict())  # the same parameters (both cuda-layout cells)
            with torch.no_grad():
                return {"max_difference_relative": max_rel(ours(x), theirs(x))}

        guarded(out, args.budget_s, **base, part="stack", mode="outputs fusedrnn vs xlstm-cuda")(compare)


# --- TiRex ------------------------------------------------------------------------------------------------------


def random_tirex(backend: str) -> torch.nn.Module:
    from tirex.models.tirex import TiRexZero

    config = dict(
        input_patch_size=32,
        output_patch_size=32,
        quantiles=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        block_kwargs=dict(embedding_dim=512, num_heads=4, num_blocks=12),
        input_ff_dim=2048,
    )
    if SMOKE:
        config.update(input_patch_size=8, output_patch_size=8, input_ff_dim=64)
        config["block_kwargs"] = dict(embedding_dim=32, num_heads=4, num_blocks=2)
    torch.manual_seed(0)
    model = TiRexZero(backend=backend, model_config=config, train_ctx_len=64 if SMOKE else 2048)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            scale = 128**-0.5 if "recurrent" in name else parameter.shape[-1] ** -0.5
            parameter.copy_(torch.randn_like(parameter) * scale)
    return model.to(DEVICE).eval()


def cell_time_share(model, forecast) -> float | None:
    """The sLSTM cells' share of one forecast: CUDA events around every cell forward (one extra pass)."""
    from tirex.models.slstm.cell import sLSTMCell

    if DEVICE.type != "cuda":
        return None

    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    handles = []
    for module in model.modules():
        if isinstance(module, sLSTMCell):

            def pre(module, inputs):
                events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
                events[-1][0].record()

            def post(module, inputs, output):
                events[-1][1].record()

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        torch.cuda.synchronize()
        start = time.perf_counter()
        forecast(model)
        torch.cuda.synchronize()
        total_ms = (time.perf_counter() - start) * 1e3
    finally:
        for handle in handles:
            handle.remove()
    return sum(begin.elapsed_time(end) for begin, end in events) / total_ms


def bench_tirex(args, out) -> None:
    import fusedrnn.compat.tirex as compat_tirex

    series, context_length, horizon = (4, 64, 8) if SMOKE else (64, 2048, 32)
    context = torch.randn(series, context_length).cumsum(-1)
    base = dict(bench="tirex", series=series, context=context_length, prediction_length=horizon, blocks=12)
    forecast = lambda model: model.forecast(context, prediction_length=horizon)[0]  # noqa: E731
    results: dict[str, torch.Tensor] = {}
    times: dict[str, float] = {}

    def make(impl):
        if impl == "fusedrnn":
            return compat_tirex.use_fusedrnn(random_tirex("torch"))
        model = random_tirex("cuda" if impl == "tirex-cuda" else "torch")
        if impl == "tirex-torch-compiled":  # what load_model(..., compile=True) does
            from tirex.models.slstm.cell import sLSTMCellTorch

            compiled = torch.compile(sLSTMCellTorch.slstm_forward)
            for block in model.blocks:
                block.slstm_layer.slstm_cell._impl_forward_torch = compiled
        return model

    impls = ("fusedrnn", "tirex-torch") if SMOKE else ("fusedrnn", "tirex-torch", "tirex-cuda", "tirex-torch-compiled")
    for impl in impls:

        def run(impl=impl):
            model = make(impl)
            results[impl], first = first_call_s(lambda: forecast(model))
            ms = median_ms(lambda: forecast(model), reps=args.reps, warmup=1, device=DEVICE)
            times[impl] = ms
            return {
                "ms": round(ms, 3),
                "first_call_s": round(first, 3),
                "slstm_share": cell_time_share(model, forecast),
            }

        guarded(out, args.budget_s, **base, impl=impl, mode="forecast")(run)

    if "fusedrnn" in results:
        for impl, result in results.items():
            if impl != "fusedrnn":
                emit(
                    {
                        **base,
                        "impl": "fusedrnn",
                        "against": impl,
                        "max_difference_relative": max_rel(results["fusedrnn"], result),
                        "speedup": round(times[impl] / times["fusedrnn"], 3),
                    },
                    out,
                )


# --- tirex-2's calls through fusedrnn.compat.flashrnn -------------------------------------------------------------


def bench_calls(args, out) -> None:
    from types import SimpleNamespace

    from fusedrnn.compat import flashrnn

    B, NH, D, T = (2, 2, 8, 4) if SMOKE else (64, 4, 128, 64)
    # tirex-2 names flashrnn's "cuda" backend on a GPU (ours: "alternating" where it runs the call); "cuda_fused"
    # (ours: "auto") for comparison
    configs = {
        name: SimpleNamespace(function="slstm", backend=name, recurrent_shape="HPGD", bias_shape="HGD")
        for name in ("cuda", "cuda_fused")
    }
    Wx = torch.randn(B, T, 4, NH, D, device=DEVICE, dtype=torch.bfloat16)
    R = (torch.randn(NH, D, 4, D, device=DEVICE) * D**-0.5).to(torch.bfloat16)
    b = torch.randn(NH, 4, D, device=DEVICE, dtype=torch.bfloat16)
    R_ours, b_ours = R.permute(2, 0, 3, 1).contiguous(), b.permute(1, 0, 2).contiguous()
    state5 = torch.zeros(4, B, 1, NH, D, device=DEVICE, dtype=torch.bfloat16)
    state4 = state5[:, :, 0]
    base = dict(bench="calls", B=B, heads=NH, head_dim=D, dtype="bfloat16")

    def per_call(fn, calls):
        def run():
            with torch.no_grad():
                for _ in range(3):
                    fn()
                synchronize()
                start = time.perf_counter()
                for _ in range(calls):
                    fn()
                synchronize()
            return {"us_per_call": round((time.perf_counter() - start) / calls * 1e6, 1)}

        return run

    one = Wx[:, :1]
    flipped = torch.flip(Wx, dims=(1,)).contiguous()
    for pattern, impl, fn in (
        ("one step", "compat.flashrnn cuda", lambda: flashrnn(one, R, b, state5, config=configs["cuda"])),
        ("one step", "compat.flashrnn cuda_fused", lambda: flashrnn(one, R, b, state5, config=configs["cuda_fused"])),
        ("one step", "fusedrnn.rnn", lambda: fusedrnn.rnn(one, R_ours, b_ours, state4, cell="slstm")),
        (
            f"flipped sequence T={T}",
            "compat.flashrnn cuda",
            lambda: flashrnn(flipped, R, b, None, config=configs["cuda"]),
        ),
        (
            f"flipped sequence T={T}",
            "compat.flashrnn cuda_fused",
            lambda: flashrnn(flipped, R, b, None, config=configs["cuda_fused"]),
        ),
        (f"flipped sequence T={T}", "fusedrnn.rnn", lambda: fusedrnn.rnn(flipped, R_ours, b_ours, None, cell="slstm")),
    ):
        guarded(out, args.budget_s, **base, pattern=pattern, impl=impl)(per_call(fn, 200))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=["xlstm", "tirex", "calls"], choices=["xlstm", "tirex", "calls"])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=300.0, help="rows after this many seconds are skipped")
    parser.add_argument("--warm-caches", action="store_true", help="keep the kernel caches (first calls warm)")
    parser.add_argument("--out", help="append the JSON lines here too")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script, no numbers")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not SMOKE:
        print("needs a CUDA device", file=sys.stderr)
        return 2
    out = open(args.out, "a") if args.out else None
    emit(
        {
            "bench": "env",
            "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu (smoke)",
            "torch": torch.__version__,
            "fusedrnn": fusedrnn.__version__,
            "cold_caches": not args.warm_caches,
        },
        out,
    )
    for name in args.only:
        try:
            {"xlstm": bench_xlstm, "tirex": bench_tirex, "calls": bench_calls}[name](args, out)
        except Exception as error:  # e.g. a package missing: the other benches still run
            emit({"bench": name, "error": f"{type(error).__name__}: {error}"}, out)
    if out is not None:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
