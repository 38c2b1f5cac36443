"""retina_plugin.sigmoid_focal_loss: the paper's numbers, fvcore equality, gradients, stability."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from fvcore.nn import sigmoid_focal_loss as fvcore_sigmoid_focal_loss

from retina_plugin import sigmoid_focal_loss

pytestmark = pytest.mark.usefixtures("single_thread")


def logit(p):
    return math.log(p / (1 - p))


def textbook_focal_loss(logits, targets, alpha, gamma):
    """FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), written out literally (use float64)."""
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = -((1 - p_t) ** gamma) * torch.log(p_t)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def stable_focal_loss(logits, targets, alpha, gamma):
    """The same formula with log(p), log(1 - p) and 1 - p from log-sigmoid/sigmoid of -z: no cancellation."""
    log_p, log_1mp = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
    p, one_minus_p = torch.sigmoid(logits), torch.sigmoid(-logits)
    loss = -targets * one_minus_p**gamma * log_p - (1 - targets) * p**gamma * log_1mp
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


# ---------------------------------------------------------------- the paper's figures


@pytest.mark.parametrize(
    "p, expected, rel",
    [(0.9, 0.000263, 1e-2), (0.1, 0.4663, 1e-3), (0.99, 2.5e-7, 1e-2)],
)
def test_foreground_values(p, expected, rel):
    x = torch.tensor([logit(p)], dtype=torch.float64)
    loss = sigmoid_focal_loss(x, torch.ones_like(x), alpha=0.25, gamma=2, reduction="none")
    assert loss.shape == x.shape
    assert loss.item() == pytest.approx(expected, rel=rel)
    # and the exact value 0.25 * (1 - p)^2 * -log(p)
    assert loss.item() == pytest.approx(0.25 * (1 - p) ** 2 * -math.log(p), rel=1e-9)


def test_background_uses_one_minus_alpha():
    p = 0.1  # foreground probability of a background anchor: p_t = 0.9
    x = torch.tensor([logit(p)], dtype=torch.float64)
    loss = sigmoid_focal_loss(x, torch.zeros_like(x), alpha=0.25, gamma=2, reduction="none")
    assert loss.item() == pytest.approx(0.75 * 0.1**2 * -math.log(0.9), rel=1e-9)


def test_alpha_minus_one_is_unweighted_and_gamma_zero_is_cross_entropy():
    x = torch.linspace(-5, 5, 11, dtype=torch.float64)
    t = (torch.arange(11) % 2).double()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(x, t, alpha=-1, gamma=0), ce, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        sigmoid_focal_loss(x, t, alpha=0.25, gamma=0), ce * (0.25 * t + 0.75 * (1 - t)), rtol=1e-12, atol=0
    )


# ---------------------------------------------------------------- equality with fvcore

ALPHA_GAMMA = [(0.25, 2.0), (0.25, 0.5), (0.25, 0.0), (-1, 2.0), (-1, 0.5), (-1, 0.0), (0.5, 1.0), (0.75, 2.0)]


@pytest.mark.parametrize("alpha, gamma", ALPHA_GAMMA)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_equals_fvcore(alpha, gamma, reduction):
    g = torch.Generator().manual_seed(0)
    logits = torch.rand(64, 7, generator=g) * 20 - 10
    targets = (torch.rand(64, 7, generator=g) > 0.7).float()

    x_ours = logits.clone().requires_grad_()
    x_ref = logits.clone().requires_grad_()
    ours = sigmoid_focal_loss(x_ours, targets, alpha=alpha, gamma=gamma, reduction=reduction)
    ref = fvcore_sigmoid_focal_loss(x_ref, targets, alpha=alpha, gamma=gamma, reduction=reduction)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)

    # a non-uniform upstream gradient exercises grad_loss in the fused backward
    upstream = torch.rand(ours.shape, generator=g) + 0.5
    (ours * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-5, atol=1e-6)


def test_bool_targets_equal_float_targets():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(50, 4, generator=g) * 3
    targets = torch.rand(50, 4, generator=g) > 0.5
    torch.testing.assert_close(
        sigmoid_focal_loss(logits, targets), sigmoid_focal_loss(logits, targets.float()), rtol=0, atol=0
    )


# ---------------------------------------------------------------- gradients in float64


@pytest.mark.parametrize("alpha, gamma", ALPHA_GAMMA + [(0.25, 3.0)])
def test_gradient_matches_textbook_autograd(alpha, gamma):
    g = torch.Generator().manual_seed(1)
    logits = (torch.rand(200, generator=g, dtype=torch.float64) * 20 - 10)
    targets = (torch.rand(200, generator=g) > 0.5).double()
    upstream = torch.rand(200, generator=g, dtype=torch.float64)

    x_ours = logits.clone().requires_grad_()
    x_ref = logits.clone().requires_grad_()
    ours = sigmoid_focal_loss(x_ours, targets, alpha=alpha, gamma=gamma)
    ref = textbook_focal_loss(x_ref, targets, alpha, gamma)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-15)
    (ours * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-8, atol=1e-15)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.25, 0.5), (-1, 1.0), (0.25, 0.0)])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_gradcheck(alpha, gamma, reduction):
    g = torch.Generator().manual_seed(2)
    logits = (torch.rand(3, 5, generator=g, dtype=torch.float64) * 12 - 6).requires_grad_()
    targets = (torch.rand(3, 5, generator=g) > 0.5).double()
    assert torch.autograd.gradcheck(
        lambda x: sigmoid_focal_loss(x, targets, alpha=alpha, gamma=gamma, reduction=reduction), (logits,)
    )


@settings(max_examples=60, deadline=None, database=None)
@given(
    pairs=st.lists(
        st.tuples(st.floats(-30, 30, allow_nan=False), st.booleans()), min_size=1, max_size=40
    ),
    alpha=st.one_of(st.just(-1.0), st.floats(0.0, 1.0)),
    gamma=st.floats(0.0, 5.0),
)
def test_property_matches_stable_formula_float64(pairs, alpha, gamma):
    # (the literal textbook formula loses digits to 1 - sigmoid(z) beyond |z| ~ 15, so the
    # reference here takes log(1 - p) as logsigmoid(-z))
    logits = torch.tensor([z for z, _ in pairs], dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([float(t) for _, t in pairs], dtype=torch.float64)
    ref_x = logits.detach().clone().requires_grad_()
    ours = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma)
    ref = stable_focal_loss(ref_x, targets, alpha, gamma)
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-15)
    assert (ours >= 0).all()
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(logits.grad, ref_x.grad, rtol=1e-8, atol=1e-15)


# ---------------------------------------------------------------- extreme logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", [0.25, -1])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_finite_at_extreme_logits(dtype, alpha, gamma):
    # (logit, target): easy fg, hard fg, hard bg, easy bg
    x = torch.tensor([100.0, -100.0, 100.0, -100.0], dtype=dtype, requires_grad=True)
    t = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=dtype)
    loss = sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma)
    loss.sum().backward()
    assert torch.isfinite(loss).all(), loss
    assert torch.isfinite(x.grad).all(), x.grad

    a_fg, a_bg = (alpha, 1 - alpha) if alpha >= 0 else (1.0, 1.0)
    # Easy examples: (almost) no loss and no gradient; hard ones: loss alpha_t * 100 and
    # gradient -alpha_t (fg, pushes the logit up) / +alpha_t (bg, pushes it down).
    expected_loss = torch.tensor([0.0, a_fg * 100.0, a_bg * 100.0, 0.0], dtype=dtype)
    expected_grad = torch.tensor([0.0, -a_fg, a_bg, 0.0], dtype=dtype)
    torch.testing.assert_close(loss.detach(), expected_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x.grad, expected_grad, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- bad inputs


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        sigmoid_focal_loss(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError):
        sigmoid_focal_loss(torch.zeros(4, 3), torch.zeros(12))


@pytest.mark.parametrize("reduction", ["avg", "", "SUM", None])
def test_bad_reduction_raises(reduction):
    with pytest.raises(ValueError):
        sigmoid_focal_loss(torch.zeros(4, 3), torch.zeros(4, 3), reduction=reduction)
