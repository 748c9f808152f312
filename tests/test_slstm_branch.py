"""sLSTM's stabiliser branch m' = max(ĩ, log σ(f̃) + m): what is well-defined at it, and what the kernels do there.

(c, n, m) is one representative of the cell's state: (c·e^-δ, n·e^-δ, m + δ) gives the same h at every later step,
and the branch picks the representative. So y and h are continuous across the branch, and so are gradients fed in
through them; gradients fed in through the final c, n or m jump there (by the gradient of m'). The contract
(docs/cells.md): gradients of losses on y and the final h are the function's; gradients through the final c, n, m
are those of the branch the step takes, which follows torch.maximum (ĩ wins where greater, ties split evenly) on
the arguments the kernel computes. Where those are within the kernel's rounding of each other, either side (or
the even split) is correct.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fusedrnn import get_cell, rnn
from fusedrnn.backends import Call, get_backend

from .helpers import TOL, max_error, random_problem, run_with_grads

# Arguments of the branch closer than this may be ordered differently by a kernel than by the float32 reference:
# the kernels compute ĩ - lfm from the same 16-bit operands with another summation order (~1e-6 relative) and
# approximate exp2 / log2 (~2^-22 relative).
TIE_MARGIN = 1e-4


def _step(x, R, b, state, take_i):
    """One sLSTM step in float32 whose branch is given: m' = ĩ where ``take_i`` is 1, log σ(f̃) + m where 0, and
    the even split of the two where 0.5 (torch.maximum's tie). Returns y [B, 1, NH, D], final [4, B, NH, D]."""
    h, c, n, m = state.unbind(0)
    pre = x[:, 0] + torch.einsum("gnij,bnj->bgni", R, h) + b
    i_raw, f_raw, z_raw, o_raw = pre.unbind(1)
    lfm = F.logsigmoid(f_raw) + m
    m_new = take_i * i_raw + (1 - take_i) * lfm
    i = torch.exp(i_raw - m_new)
    f = torch.exp(lfm - m_new)
    c_new = f * c + i * torch.tanh(z_raw)
    n_new = torch.clamp(f * n + i, min=1.0)
    h_new = torch.sigmoid(o_raw) * c_new / n_new
    return h_new.unsqueeze(1), torch.stack((h_new, c_new, n_new, m_new))


def _branch_arguments(x, R, b, state):
    """ĩ - (log σ(f̃) + m) per element [B, NH, D], in float32 from the (16-bit) inputs."""
    x, R, b, state = (t.float() for t in (x, R, b, state))
    pre = x[:, 0] + torch.einsum("gnij,bnj->bgni", R, state[0]) + b
    return pre[:, 0] - (F.logsigmoid(pre[:, 1]) + state[3])


def test_reference_y_gradients_are_continuous_across_the_branch_and_final_m_gradients_jump():
    """float64: moving m across the tie by ±ε changes the gradients fed in through y and h by O(ε) and those fed
    in through the final m by O(1) (the function's own property, which the tests of the kernels rely on)."""
    B, T, NH, D = 3, 4, 2, 8
    x, R, b, state = random_problem("slstm", B, T, NH, D)
    gap = _branch_arguments(x, R, b, state)
    eps = 1e-6

    def grads(side, dfinal):
        s = state.clone()
        s[3] = s[3] + gap + side * eps  # every element of step 0 eps beside its tie
        dy = torch.ones(B, T, NH, D, dtype=torch.float64)
        _, _, g = run_with_grads(lambda *a: rnn(*a, cell="slstm", backend="reference"), (x, R, b, s), dy, dfinal)
        return torch.cat([t.flatten() for t in g])

    through_h = torch.zeros(4, B, NH, D, dtype=torch.float64)
    through_h[0] = 1.0
    through_m = torch.zeros_like(through_h)
    through_m[3] = 1.0
    assert (grads(1, through_h) - grads(-1, through_h)).abs().max() < 1e-4
    assert (grads(1, through_m) - grads(-1, through_m)).abs().max() > 0.1


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("NH,D", [(3, 64), (1, 768)], ids=str)
@pytest.mark.parametrize("backend", ["cuda", "triton", "alternating"])
def test_kernels_take_the_reference_branch_and_split_ties(backend, NH, D, dtype):
    """One step from a given state whose m puts many elements near the tie: y and the final states match the
    reference everywhere; the gradients of every input fed in through all four final states match the reference
    element-wise where the branch's arguments are farther apart than TIE_MARGIN, and one side of the branch (or the
    even split) where they are closer."""
    B = 64
    call = Call(get_cell("slstm"), B, 1, NH, D, dtype, torch.device("cuda"), True)
    reason = get_backend(backend).supports(call)
    if reason is not None:
        pytest.skip(reason)
    x, R, b, state = random_problem("slstm", B, 1, NH, D, dtype=dtype, device="cuda")
    # m so that log σ(f̃) + m lands on ĩ, up to m's own rounding (0.5 ulp of m in the 16-bit dtype)
    near = torch.rand(B, NH, D, device="cuda") < 0.75
    m = state[3].float() + _branch_arguments(x, R, b, state)
    state[3] = torch.where(near, m, state[3].float()).to(dtype)
    gap = _branch_arguments(x, R, b, state)
    assert (gap.abs() <= TIE_MARGIN).sum() > 0 and (gap.abs() > TIE_MARGIN).sum() > 0
    dy = torch.randn(B, 1, NH, D, device="cuda")
    dfinal = torch.randn(4, B, NH, D, device="cuda")

    y, final, (dx, _, _, dstate) = run_with_grads(
        lambda *a: rnn(*a, cell="slstm", backend=backend), (x, R, b, state), dy, dfinal
    )
    ref_inputs = [t.float() for t in (x, R, b, state)]
    y_ref, final_ref, (dx_ref, _, _, ds_ref) = run_with_grads(
        lambda *a: rnn(*a, cell="slstm", backend="reference"), ref_inputs, dy, dfinal
    )
    tol = TOL[dtype]
    assert max_error(y, y_ref) <= tol["fw"] and max_error(final, final_ref) <= tol["fw"]

    sides = []
    for take_i in (1.0, 0.0, 0.5):
        _, _, (dx_side, _, _, ds_side) = run_with_grads(lambda *a, t=take_i: _step(*a, t), ref_inputs, dy, dfinal)
        sides.append((dx_side, ds_side))
    far = gap.abs() > TIE_MARGIN  # [B, NH, D]
    # dx [B, 1, G, NH, D] and d(c, n, m) [3, B, NH, D] are element-wise in the branch's elements at T = 1 (dh, dR and
    # db sum over units or rows, near ties included)
    checks = (
        ("dx", dx, dx_ref, [s[0] for s in sides], far[:, None, None]),
        ("d(c, n, m)", dstate[1:], ds_ref[1:], [s[1][1:] for s in sides], far[None]),
    )
    for name, got, ref, one_sided, far_here in checks:
        scale = max(1.0, ref.abs().max().item())  # max_error's scale
        err = (got.double() - ref.double()).abs() / scale
        assert err[far_here.expand_as(err)].max().item() <= tol["bw"], name
        nearest = torch.stack([(got.double() - s.double()).abs() for s in one_sided]).amin(0) / scale
        assert nearest.max().item() <= tol["bw"], name
