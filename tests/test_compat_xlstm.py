"""fusedrnn.compat.xlstm: xlstm's sLSTM layers with their recurrence on fusedrnn, against xlstm's own backends.

On the CPU against xlstm's ``vanilla`` backend (forward, final states, the gradients of the input and of every
parameter), for cells built for either backend's parameter layout; on a GPU against xlstm's ``cuda`` backend
(which compiles its kernels with nvcc at first use).
"""

import copy

import pytest
import torch

from fusedrnn.compat import xlstm as compat_xlstm

from .helpers import import_test_package, max_error

# float32 (max_error: absolute for values of order one, relative to the largest element otherwise). Both sides
# evaluate the same formulas in float32 and differ in the order of the D-term sums of R h and of autograd's
# sums over B and T for dR, db: 2^-24 per operation grown over T <= 9 steps; measured <= 5e-7, the bar of the
# integration is 1e-5, still 10^4 below a gate-order or layout mistake (errors of order one).
TOL_FLOAT32 = 1e-5


@pytest.fixture
def xlstm():
    return import_test_package("xlstm", "xlstm")


def _layer(xlstm, backend, NH, D, function="slstm", conv=4):
    from xlstm.blocks.slstm.layer import sLSTMLayer, sLSTMLayerConfig

    config = sLSTMLayerConfig(
        embedding_dim=NH * D, num_heads=NH, backend=backend, conv1d_kernel_size=conv, function=function
    )
    layer = sLSTMLayer(config)
    _randomize(layer, D)
    return layer


def _randomize(module, D):
    """Random parameters (xlstm initialises R to zero, which would not test R's layout); R scaled so the
    recurrence neither dies nor explodes, the forget-gate biases spread as xlstm's power-law init does."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            scale = 1.0 / D**0.5 if "recurrent" in name else 0.5
            parameter.copy_(torch.randn_like(parameter) * scale)


def _copy_parameters(source_cell, target_cell):
    """source's parameters into target, through xlstm's external layouts (the two may store them differently)."""
    with torch.no_grad():
        kernel = source_cell._recurrent_kernel_int2ext(source_cell._recurrent_kernel_)
        target_cell._recurrent_kernel_.copy_(target_cell._recurrent_kernel_ext2int(kernel))
        bias = source_cell._bias_int2ext(source_cell._bias_)
        target_cell._bias_.copy_(target_cell._bias_ext2int(bias))


def _run(layer, x, state=None):
    """The layer's output, final sLSTM state and the gradients of a random linear function of both with respect
    to x and every parameter (by name)."""
    x = x.clone().requires_grad_(True)
    layer.zero_grad()
    out, states = layer(x, slstm_state=state, return_last_state=True)
    final = states["slstm_state"]
    generator = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=generator)).sum()
    loss = loss + (final * torch.randn(final.shape, generator=generator)).sum()
    loss.backward()
    grads = {"x": x.grad}
    grads.update({name: p.grad for name, p in layer.named_parameters()})
    cell = layer.slstm_cell  # its parameters' gradients in xlstm's external layouts (the same for every backend)
    grads["slstm_cell._recurrent_kernel_"] = cell._recurrent_kernel_int2ext(cell._recurrent_kernel_.grad)
    grads["slstm_cell._bias_"] = cell._bias_int2ext(cell._bias_.grad)
    return out.detach(), final.detach(), grads


def _assert_same(got, expected, tol):
    (out, final, grads), (out_ref, final_ref, grads_ref) = got, expected
    assert out.shape == out_ref.shape and final.shape == final_ref.shape
    errors = {"output": max_error(out, out_ref), "final state": max_error(final, final_ref)}
    errors.update({f"d{name}": max_error(grads[name], grads_ref[name]) for name in grads_ref})
    assert max(errors.values()) <= tol, errors


def _initial_state(NH, D, B, num_states):
    state = torch.randn(num_states, B, NH * D)
    if num_states == 4:
        state[2] = state[2].abs() + 1.0  # n >= 1, as after any step
    return state


SHAPES = [(1, 1, 1, 8), (3, 7, 2, 8), (2, 9, 4, 6), (1, 5, 1, 12)]  # (B, T, NH, D)


@pytest.mark.parametrize("B,T,NH,D", SHAPES, ids=str)
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
def test_vanilla_layer_matches_xlstm_vanilla(xlstm, B, T, NH, D, with_state):
    ours = _layer(xlstm, "vanilla", NH, D)
    theirs = copy.deepcopy(ours)
    assert compat_xlstm.use_fusedrnn(ours, backend="reference") is ours
    x = torch.randn(B, T, NH * D)
    state = _initial_state(NH, D, B, 4) if with_state else None
    _assert_same(_run(ours, x, state), _run(theirs, x, state), TOL_FLOAT32)


def test_cuda_layout_cell_matches_xlstm_vanilla(xlstm):
    """A cell built for xlstm's cuda backend (its parameter layout), without nvcc: install() builds it."""
    B, T, NH, D = 3, 6, 2, 8
    compat_xlstm.install(backend="reference")
    try:
        ours = _layer(xlstm, "cuda", NH, D)
    finally:
        compat_xlstm.uninstall()
    assert not compat_xlstm.is_installed()
    assert isinstance(ours.slstm_cell, xlstm.blocks.slstm.cell.sLSTMCell_cuda)
    assert ours.slstm_cell._recurrent_kernel_.shape == (NH, D, 4 * D)  # the cuda backend's own layout
    theirs = _layer(xlstm, "vanilla", NH, D)
    theirs.load_state_dict({k: v for k, v in ours.state_dict().items() if "slstm_cell" not in k}, strict=False)
    _copy_parameters(ours.slstm_cell, theirs.slstm_cell)
    x = torch.randn(B, T, NH * D)
    state = _initial_state(NH, D, B, 4)
    _assert_same(_run(ours, x, state), _run(theirs, x, state), TOL_FLOAT32)


def test_bfloat16_model(xlstm):
    """A bfloat16 model: outputs and final states in bfloat16. xlstm's vanilla backend rounds every state to
    bfloat16 after each step, fusedrnn keeps them in float32 (2^-8 relative per step, over T = 6 and the group
    norm's scaling): measured <= 1e-2 over 6 seeds; 5e-2 is still far below a layout mistake."""
    theirs = _layer(xlstm, "vanilla", 2, 8).to(torch.bfloat16)
    ours = compat_xlstm.use_fusedrnn(copy.deepcopy(theirs), backend="reference")
    x = torch.randn(2, 6, 16, dtype=torch.bfloat16)
    out, states = ours(x, return_last_state=True)
    out_ref, states_ref = theirs(x, return_last_state=True)
    assert out.dtype == states["slstm_state"].dtype == torch.bfloat16
    assert max_error(out, out_ref) <= 5e-2
    assert max_error(states["slstm_state"][0], states_ref["slstm_state"][0]) <= 5e-2


def test_lstm_function_matches_xlstm_vanilla(xlstm):
    ours = _layer(xlstm, "vanilla", 2, 8, function="lstm")
    theirs = copy.deepcopy(ours)
    compat_xlstm.use_fusedrnn(ours, backend="reference")
    x = torch.randn(2, 5, 16)
    state = _initial_state(2, 8, 2, 2)
    _assert_same(_run(ours, x, state), _run(theirs, x, state), TOL_FLOAT32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter case runs where there is no GPU")
def test_triton_backend_in_the_interpreter(xlstm):
    ours = _layer(xlstm, "vanilla", 2, 16)
    theirs = copy.deepcopy(ours)
    compat_xlstm.use_fusedrnn(ours, backend="triton")
    x = torch.randn(2, 5, 32)
    _assert_same(_run(ours, x), _run(theirs, x), TOL_FLOAT32)


def test_block_stack_and_single_steps(xlstm):
    """A stack of sLSTM blocks; its step() (one token at a time, states carried) equals xlstm's."""
    from xlstm import xLSTMBlockStack, xLSTMBlockStackConfig
    from xlstm.blocks.slstm.block import sLSTMBlockConfig
    from xlstm.blocks.slstm.layer import sLSTMLayerConfig

    config = xLSTMBlockStackConfig(
        slstm_block=sLSTMBlockConfig(slstm=sLSTMLayerConfig(num_heads=2, backend="vanilla")),
        num_blocks=2,
        embedding_dim=16,
        context_length=8,
    )
    theirs = xLSTMBlockStack(config)
    _randomize(theirs, 8)
    ours = compat_xlstm.use_fusedrnn(copy.deepcopy(theirs), backend="reference")
    x = torch.randn(2, 6, 16)
    assert max_error(ours(x), theirs(x)) <= TOL_FLOAT32
    state_ours = state_theirs = None
    for t in range(3):
        y_ours, state_ours = ours.step(x[:, t : t + 1], state=state_ours)
        y_theirs, state_theirs = theirs.step(x[:, t : t + 1], state=state_theirs)
        assert max_error(y_ours, y_theirs) <= TOL_FLOAT32


def test_cell_hooks_match_vanilla(xlstm):
    """The backend hooks xlstm's base class calls (_impl: all states; _impl_step) give vanilla's results."""
    B, T, NH, D = 2, 4, 2, 8
    ours = _layer(xlstm, "vanilla", NH, D).slstm_cell
    theirs = copy.deepcopy(ours)
    compat_xlstm.use_fusedrnn(ours, backend="reference")
    internal = torch.randn(T, B, 4 * NH * D)
    state = _initial_state(NH, D, B, 4)
    assert max_error(ours._impl(False, internal, state), theirs._impl(False, internal, state)) <= TOL_FLOAT32
    assert max_error(ours._impl_step(False, internal[:1], state), theirs._impl_step(False, internal[:1], state)) <= (
        TOL_FLOAT32
    )


def test_state_dict_unchanged(xlstm):
    layer = _layer(xlstm, "vanilla", 2, 8)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    compat_xlstm.use_fusedrnn(layer)
    after = layer.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(layer.slstm_cell, xlstm.blocks.slstm.cell.sLSTMCell_vanilla)


def test_the_fused_classes_pickle(xlstm):
    """pickle finds the fused cell classes by name (xlstm's own modules do not unpickle: its ParameterProxy
    recurses in __getattr__, so a whole-model round trip is not testable here)."""
    import pickle

    for backend in ("vanilla", "cuda"):
        base = getattr(xlstm.blocks.slstm.cell, f"sLSTMCell_{backend}")
        fused = compat_xlstm.fused_cell_class(base)
        assert pickle.loads(pickle.dumps(fused)) is fused


@pytest.mark.parametrize(
    "option,value",
    [("gradient_recurrent_cut", True), ("gradient_recurrent_clipval", 1.0), ("forward_clipval", 2.0)],
)
def test_unsupported_options_raise(xlstm, option, value):
    layer = _layer(xlstm, "vanilla", 2, 8)
    setattr(layer.slstm_cell.config, option, value)
    with pytest.raises(ValueError, match=f"config.{option}"):
        compat_xlstm.use_fusedrnn(layer)


def test_bad_arguments(xlstm):
    with pytest.raises(TypeError, match="module: expected a torch.nn.Module"):
        compat_xlstm.use_fusedrnn("model")
    with pytest.raises(TypeError, match="backend: expected a backend name"):
        compat_xlstm.use_fusedrnn(torch.nn.Linear(2, 2), backend=None)
    layer = compat_xlstm.use_fusedrnn(_layer(xlstm, "vanilla", 2, 8))
    with pytest.raises(ValueError, match=r"state: expected shape \(4, 3, 16\)"):
        layer.slstm_cell(torch.randn(3, 2, 64), state=torch.zeros(4, 2, 16))


# --- GPU: against xlstm's cuda backend (compiled with nvcc at first use) ------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_matches_xlstm_cuda_backend(xlstm, dtype):
    """Against xlstm's own CUDA kernels. xlstm's cuda backend computes in bfloat16 (config.dtype) with float32
    biases whatever the model's dtype; ours in the model's dtype. bfloat16: both round h to 8 bits each step
    (2^-8 relative), grown over T = 32: 5e-2 on values of order one, 10x below a layout mistake. float32: ours is
    exact to 1e-6 and theirs carries its bfloat16 rounding, so the same bound."""
    B, T, NH, D = 8, 32, 4, 32  # B: xlstm's default batch_size hint
    theirs = _layer(xlstm, "cuda", NH, D)  # compiles xlstm's kernels (nvcc)
    compat_xlstm.install()
    try:
        ours = _layer(xlstm, "cuda", NH, D)  # the same parameter layout, no compilation
    finally:
        compat_xlstm.uninstall()
    ours.load_state_dict(theirs.state_dict())
    ours, theirs = ours.to("cuda", dtype), theirs.to("cuda", dtype)
    x = torch.randn(B, T, NH * D, device="cuda", dtype=dtype)
    out_ours, state_ours = ours(x, return_last_state=True)
    out_theirs, state_theirs = theirs(x, return_last_state=True)
    assert max_error(out_ours.float(), out_theirs.float()) <= 5e-2
    h_ours, h_theirs = state_ours["slstm_state"][0], state_theirs["slstm_state"][0]
    assert max_error(h_ours.float(), h_theirs.float()) <= 5e-2
