"""Drop-in replacement for the published flashrnn package's ``flashrnn`` function.

Switch with one import change::

    # from flashrnn import flashrnn
    from fusedrnn.compat import flashrnn
    h, last = flashrnn(Wx, R, b, states, function="lstm", backend="cuda_fused")

``flashrnn`` accepts flashrnn 1.0.8's call (``flashrnn(Wx, R, b, states=None, function="lstm", config=None,
backend="cuda_fused", dtype="bfloat16")``), takes its layouts and gate orders, and returns its shapes; it
runs on ``fusedrnn.rnn`` and is differentiable with respect to Wx, R, b and states. The flashrnn package is
not needed (the tests compare against it when it is installed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..api import SUPPORTED_DTYPES, initial_state, rnn
from ..backends import Backend, Call, backend_names, get_backend, select_backend
from ..backends.fused import saved_shapes
from ..cells import Cell, get_cell

__all__ = ["flashrnn", "FUNCTIONS", "BACKENDS", "DTYPES"]

LOGGER = logging.getLogger("fusedrnn")


@dataclass(frozen=True)
class _Function:
    """A flashrnn function as a fusedrnn cell; R_ours = R_flashrnn[r_order], b_ours = b_flashrnn[b_order]
    along the gate axis (None: the same gate order)."""

    cell: str
    r_order: tuple[int, ...] | None = None
    b_order: tuple[int, ...] | None = None


# flashrnn's GRU orders R's gates (n, r, z) and b's (n_hidden, r, z, n_in); Wx's are (r, z, n) as ours.
# Ours follow torch.nn.GRU: R (r, z, n), b (r, z, n_in, n_hidden).
FUNCTIONS: dict[str, _Function] = {
    "lstm": _Function("lstm"),
    "gru": _Function("gru", r_order=(1, 2, 0), b_order=(1, 2, 3, 0)),
    "elman": _Function("elman"),
    "slstm": _Function("slstm"),
}

# flashrnn backend -> fusedrnn backend. "cuda" is flashrnn's alternating (per-step GEMM + pointwise)
# kernel: ours where it can run the call on this device, else "auto".
BACKENDS: dict[str, str] = {
    "vanilla": "reference",
    "vanilla_fwbw": "reference",
    "cuda": "alternating",
    "cuda_fused": "auto",
    "triton_fused": "auto",
}

# flashrnn's dtype names (its kernels' compute dtype); accepted, and the computation follows the inputs' dtype
DTYPES = ("bfloat16", "float16", "float32", "float64")

# fusedrnn's public layouts in flashrnn's letters (B batch, T time, G gates, H heads, D head size, P the
# head size R reads, S states). These are flashrnn's defaults too.
_INPUT, _RECURRENT, _BIAS, _OUTPUT = "BTGHD", "GHDP", "GHD", "SBTHD"

# FlashRNNConfig options that change what flashrnn computes in its CUDA backends and that we do not
# implement: (name, default). A config with another value raises rather than computing something else.
_UNSUPPORTED_OPTIONS = (
    ("gradient_recurrent_cut", False),
    ("gradient_recurrent_clipval", None),
    ("forward_clipval", None),
)


def refuse_unsupported_options(config: Any, library: str) -> None:
    """Raise where a flashrnn-style config (flashrnn's, xlstm's sLSTM) asks for an option only ``library``'s own
    kernels implement: each changes the result, so computing without it would return other numbers."""
    for option, default in _UNSUPPORTED_OPTIONS:
        value = getattr(config, option, default)
        if value != default:
            raise ValueError(
                f"config.{option}: only {default!r} is supported (it changes {library}'s result and is not "
                f"implemented in fusedrnn), got {value!r}"
            )
    constants = getattr(config, "constants", None)
    if constants:
        raise ValueError(f"config.constants: only {{}} is supported (no cell has constants), got {constants!r}")


def _check_layout(option: str, layout: object, letters: str) -> str:
    if not isinstance(layout, str) or sorted(layout) != sorted(letters):
        raise ValueError(f"config.{option}: expected a permutation of {letters!r}, got {layout!r}")
    return layout


def _permute(name: str, tensor: object, layout: str, target: str) -> torch.Tensor:
    """``tensor`` in ``layout`` viewed in ``target`` (same letters)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [{', '.join(layout)}], got {type(tensor).__name__}")
    if tensor.dim() != len(layout):
        raise ValueError(
            f"{name}: expected a {len(layout)}-d tensor [{', '.join(layout)}], got shape {tuple(tensor.shape)}"
        )
    if layout == target:  # the default layouts: no permute (a per-call host cost for one-step callers)
        return tensor
    return tensor.permute([layout.index(letter) for letter in target])


def _check_sizes(name: str, tensor: torch.Tensor, target: str, layout: str, expected: dict[str, int], why: str) -> None:
    """Sizes of ``tensor`` (in ``target``) against ``expected`` per letter; errors show the caller's layout."""
    sizes = dict(zip(target, tensor.shape))
    if any(sizes[letter] != size for letter, size in expected.items()):
        want = tuple(expected.get(letter, sizes[letter]) for letter in layout)
        got = tuple(sizes[letter] for letter in layout)
        raise ValueError(f"{name}: expected shape {want} [{', '.join(layout)}] ({why}), got {got}")


def _initial_states(
    initial_val: float | Sequence[float], spec: Cell, batch: int, num_heads: int, head_dim: int, like: torch.Tensor
) -> torch.Tensor | None:
    """flashrnn's ``config.initial_val`` (one value for all states or one per state) as states [S, B, NH, D];
    None where it is all zeros, the cells' own initial state."""
    values = [float(initial_val)] * spec.num_states if isinstance(initial_val, (int, float)) else list(initial_val)
    if len(values) != spec.num_states:
        raise ValueError(
            f"config.initial_val: expected one value or {spec.num_states} (one per state {spec.states}), "
            f"got {len(values)}"
        )
    if not any(values):
        return None
    column = torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1, 1)
    return column.expand(spec.num_states, batch, num_heads, head_dim).contiguous()


def _resolve_backend(backend: str, call: Call) -> str:
    ours = BACKENDS[backend]
    if ours != "alternating":
        return ours
    if "alternating" in backend_names():
        alternating = get_backend("alternating")
        reason = alternating.supports(call)
        if reason is None and call.device.type in alternating.auto_devices:
            return "alternating"
        LOGGER.debug("flashrnn backend 'cuda': 'alternating' not used (%s), using 'auto'", reason or call.device)
    return "auto"


def _state_sequence(
    spec: Cell, x: torch.Tensor, R: torch.Tensor, b: torch.Tensor, state: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Every state at every step [S, B, T, NH, D], from h at every step (y [B, T, NH, D], the kernel's output).

    fusedrnn returns h per step and the other states (LSTM's c, sLSTM's c, n, m) only at the end. Given h,
    the gate pre-activations of all steps are one batched product, and the other states follow by running
    the cell's pointwise step over T (no recurrent GEMM in the loop). Differentiable; 16-bit inputs are
    recomputed in float32, as the reference backend does.
    """
    if spec.num_states == 1:
        return y.unsqueeze(0)
    compute = torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype
    x_c, R_c, b_c, state_c = (t.to(compute) for t in (x, R, b, state))
    steps = x.shape[1]
    h_prev = torch.cat([state_c[0].unsqueeze(1), y.to(compute)], dim=1)[:, :steps]  # [B, T, NH, D]
    r = torch.einsum("gnij,btnj->btgni", R_c, h_prev)  # [B, T, Gr, NH, D]
    states = tuple(state_c.unbind(0))
    others = []
    for t in range(steps):
        states = spec.step(x_c[:, t], r[:, t], b_c, (h_prev[:, t], *states[1:]))
        others.append(torch.stack(states[1:]))  # [S - 1, B, NH, D]
    if not others:
        return y.new_empty(spec.num_states, y.shape[0], 0, *y.shape[2:])
    return torch.cat([y.unsqueeze(0), torch.stack(others, dim=2).to(y.dtype)], dim=0)


@dataclass(frozen=True)
class _Options:
    """One flashrnn call's options, from its arguments or its config, validated."""

    function: str
    backend: str
    input_shape: str = _INPUT
    recurrent_shape: str = _RECURRENT
    bias_shape: str = _BIAS
    output_shape: str = _OUTPUT
    initial_val: float | Sequence[float] = 0.0
    num_heads: int = -1
    head_dim: int = -1


def _options(config: Any, function: str, backend: str, dtype: str | None) -> _Options:
    """Validate the call's options; a config replaces function, backend and dtype, as in flashrnn."""
    if config is None:
        options = _Options(function, backend)
    else:
        refuse_unsupported_options(config, "flashrnn")
        options = _Options(
            function=getattr(config, "function", "lstm"),
            backend=getattr(config, "backend", "cuda_fused"),
            input_shape=_check_layout("input_shape", getattr(config, "input_shape", _INPUT), _INPUT),
            recurrent_shape=_check_layout(
                "recurrent_shape", getattr(config, "recurrent_shape", _RECURRENT), _RECURRENT
            ),
            bias_shape=_check_layout("bias_shape", getattr(config, "bias_shape", _BIAS), _BIAS),
            output_shape=_check_layout("output_shape", getattr(config, "output_shape", _OUTPUT), _OUTPUT),
            initial_val=getattr(config, "initial_val", 0.0),
            num_heads=getattr(config, "num_heads", -1),
            head_dim=getattr(config, "head_dim", -1),
        )
        dtype = getattr(config, "dtype", "bfloat16")
    if options.function not in FUNCTIONS:
        raise ValueError(f"function: expected one of {sorted(FUNCTIONS)}, got {options.function!r}")
    if options.backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {sorted(BACKENDS)} (flashrnn's backends), got {options.backend!r}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {list(DTYPES)} or None, got {dtype!r}")
    return options


def _translate(
    options: _Options, spec: Cell, Wx: object, R: object, b: object, states: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """flashrnn's tensors (layouts of ``options``, its gate orders) as fusedrnn.rnn's x, R, b, state."""
    name = options.function
    x = _permute("Wx", Wx, options.input_shape, _INPUT)
    B, T, _, NH, D = x.shape
    _check_sizes(
        "Wx", x, _INPUT, options.input_shape, {"G": spec.num_gates_x}, f"{name!r} has {spec.num_gates_x} input gates"
    )
    R_ours = _permute("R", R, options.recurrent_shape, _RECURRENT)
    _check_sizes(
        "R",
        R_ours,
        _RECURRENT,
        options.recurrent_shape,
        {"G": spec.num_gates_r, "H": NH, "D": D, "P": D},
        f"{name!r} has {spec.num_gates_r} recurrent gates; H and D of Wx",
    )
    b_ours = _permute("b", b, options.bias_shape, _BIAS)
    _check_sizes(
        "b",
        b_ours,
        _BIAS,
        options.bias_shape,
        {"G": spec.num_gates_b, "H": NH, "D": D},
        f"{name!r} has {spec.num_gates_b} bias gates; H and D of Wx",
    )
    named = [("R", R_ours), ("b", b_ours)]
    if states is not None:
        states_ours = _permute("states", states, options.output_shape, _OUTPUT)
        _check_sizes(
            "states",
            states_ours,
            _OUTPUT,
            options.output_shape,
            {"S": spec.num_states, "B": B, "H": NH, "D": D},
            f"{name!r} has {spec.num_states} states; B, H and D of Wx",
        )
        if states_ours.shape[2] == 0:
            raise ValueError(
                f"states: expected at least one entry on axis T of {options.output_shape}, got shape "
                f"{tuple(states_ours.shape[_OUTPUT.index(a)] for a in options.output_shape)}"
            )
        named.append(("states", states_ours))
    for arg, tensor in named:
        if tensor.dtype != x.dtype:
            raise TypeError(f"{arg}: expected dtype {x.dtype} (the dtype of Wx), got {tensor.dtype}; cast with .to()")
        if tensor.device != x.device:
            raise ValueError(f"{arg}: expected device {x.device} (the device of Wx), got {tensor.device}")
    for field, actual in (("num_heads", NH), ("head_dim", D)):
        value = getattr(options, field)
        if value > 0 and value != actual:
            raise ValueError(f"config.{field}: expected {actual} (from Wx's shape) or unset, got {value}")

    translation = FUNCTIONS[name]
    if translation.r_order is not None:
        R_ours = R_ours[list(translation.r_order)]
    if translation.b_order is not None:
        b_ours = b_ours[list(translation.b_order)]
    if states is not None:
        return x, R_ours, b_ours, states_ours[:, :, 0]  # flashrnn reads index 0 of the T axis
    return x, R_ours, b_ours, _initial_states(options.initial_val, spec, B, NH, D, x)


def flashrnn(
    Wx: torch.Tensor,
    R: torch.Tensor,
    b: torch.Tensor,
    states: torch.Tensor | None = None,
    function: str = "lstm",
    config: Any = None,
    backend: str = "cuda_fused",
    dtype: str | None = "bfloat16",
) -> tuple[torch.Tensor, torch.Tensor]:
    """flashrnn 1.0.8's ``flashrnn`` call, computed by fusedrnn. Switch with one import change::

        # from flashrnn import flashrnn
        from fusedrnn.compat import flashrnn
        h, last = flashrnn(Wx, R, b, states, function="lstm", backend="cuda_fused")

    Args (flashrnn's default layouts; a ``config`` may give others, see below):
        Wx: input pre-activations [B, T, G, NH, D].
        R: recurrent weights [G, NH, D, D]; R[g, n] maps h (last axis) to gate g, as in ``fusedrnn.rnn``.
        b: biases [Gb, NH, D].
        states: initial states [S, B, 1, NH, D] (states only at index 0 of axis 2 are read, as flashrnn
            does for any length of that axis); zeros when None.
        function: "lstm" (gates i, f, z, o), "gru", "elman" or "slstm" (i, f, z, o). GRU takes flashrnn's
            gate orders: Wx (r, z, n), R (n, r, z), b (n_hidden, r, z, n_in) — reordered here to fusedrnn's.
        config: a flashrnn ``FlashRNNConfig`` (any object with its attributes); as in flashrnn it replaces
            function, backend and dtype. Honoured: function, backend, input_shape, recurrent_shape,
            bias_shape, output_shape, initial_val. Ignored: the dtype_* and mixed-precision options (see
            dtype), batch_size, trainable_r / trainable_b (flashrnn does not read them); hidden_dim,
            num_heads and head_dim come from Wx (a positive num_heads / head_dim must agree with it).
            gradient_recurrent_cut, gradient_recurrent_clipval, forward_clipval and constants other than
            the defaults raise ValueError: they change the result in flashrnn and are not implemented here.
        backend: "vanilla" / "vanilla_fwbw" run fusedrnn's "reference"; "cuda_fused" / "triton_fused" run
            "auto"; "cuda" runs "alternating" where it can run the call on the tensors' device, else "auto".
            Every function runs on every backend (flashrnn's vanilla_fwbw and triton_fused have no GRU or
            Elman).
        dtype: flashrnn's kernel compute dtype, one of DTYPES (or None). Validated, not used: the
            computation follows the inputs' dtype (16-bit inputs in float32 internally) and the outputs
            have Wx's dtype, as with flashrnn's vanilla backend. R, b and states must have Wx's dtype.

    Returns:
        (all states at every step [S, B, T, NH, D], final states [S, B, 1, NH, D]), in Wx's dtype and
        config.output_shape (default "SBTHD"); the first tensor excludes the initial state. h is
        ``all[0]``. LSTM's c and sLSTM's c, n, m per step: for one step (T = 1) the final states; without
        a gradient on a fused backend, the states its kernel saves; otherwise recomputed from h by a
        differentiable pointwise loop over T (fusedrnn.rnn returns only h per step): where only h is
        needed, ``fusedrnn.rnn`` is faster.

    Differences from flashrnn 1.0.8, in corner cases:
        - sLSTM's fresh-state test (n == 0 -> m' = i~) is per element here and in flashrnn's CUDA kernels;
          its vanilla backend applies it only when n is zero in every element of the batch
          (``torch.all``). States that are all fresh (states=None) or all used (n >= 1) agree.
        - flashrnn's CUDA sLSTM kernels clamp the input and forget gates to <= 1; this matters only for
          a fresh element (n == 0) with c != 0. We compute the vanilla backend's (unclamped) function.
        - R, b and states must have Wx's dtype (flashrnn's CUDA kernels take R and b in other dtypes; its
          vanilla backend fails on them).
        - A config.initial_val given as an int works here; flashrnn raises TypeError.

    Raises:
        ValueError: unknown function, backend or dtype name, unsupported config option, bad shapes.
        TypeError: a non-tensor argument or mismatched dtypes.
    """
    options = _options(config, function, backend, dtype)
    spec = get_cell(FUNCTIONS[options.function].cell)
    x, R_ours, b_ours, state = _translate(options, spec, Wx, R, b, states)
    B, T, _, NH, D = x.shape
    call = Call(
        cell=spec,
        batch=B,
        steps=T,
        num_heads=NH,
        head_dim=D,
        dtype=x.dtype,
        device=x.device,
        requires_grad=torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, R, b, states)),
    )
    backend_name = _resolve_backend(options.backend, call)
    kernel = _backend_keeping_states(backend_name, call) if T > 1 and spec.num_states > 1 else None
    if kernel is not None and kernel.op_forward is not None:
        # inference on a fused backend: the states per step come from the kernel (what it saves for backward)
        if state is None:
            state = initial_state(spec, B, NH, D, dtype=x.dtype, device=x.device)
        _, final, _, saved = kernel.op_forward(spec, x, R_ours, b_ours, state, None, None, True)
        all_states = saved[:, :, 1:].permute(0, 3, 2, 1, 4).to(x.dtype)  # [S, NH, T + 1, B, D] -> [S, B, T, NH, D]
        return _in_layout(options, all_states, final)
    y, final = rnn(x, R_ours, b_ours, state, cell=spec, backend=backend_name)
    if T == 1 or spec.num_states == 1:
        # one step (a caller stepping one token at a time): its states are the final states, nothing to recompute
        all_states = final.unsqueeze(2) if T == 1 else y.unsqueeze(0)  # [S, B, T, NH, D]
    else:
        if state is None:
            state = initial_state(spec, B, NH, D, dtype=x.dtype, device=x.device)
        all_states = _state_sequence(spec, x, R_ours, b_ours, state, y)
    return _in_layout(options, all_states, final)


def _in_layout(options: _Options, all_states: torch.Tensor, final: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """all_states [S, B, T, NH, D] and final [S, B, NH, D] in config.output_shape (final with T = 1)."""
    if options.output_shape == _OUTPUT:
        return all_states, final.unsqueeze(2)
    order = [_OUTPUT.index(letter) for letter in options.output_shape]
    return all_states.permute(order), final.unsqueeze(2).permute(order)


def _backend_keeping_states(backend_name: str, call: Call) -> Backend | None:
    """The backend that runs this call when it can give every state at every step from its kernel's saved states
    instead of their recomputation from h (a loop over T of pointwise launches, far slower than the kernel):
    inference (the saved states are not differentiable outputs) on a backend with the fused backends' saved
    layout, outside autocast and torch.compile (which fusedrnn.rnn handles); else None."""
    if call.requires_grad or call.dtype not in SUPPORTED_DTYPES or call.batch == 0:
        return None
    if torch.is_autocast_enabled(call.device.type) or torch.compiler.is_compiling():
        return None
    try:
        backend = select_backend(backend_name, call)
    except ValueError:
        return None
    return backend if backend.op_saved_shapes is saved_shapes else None
