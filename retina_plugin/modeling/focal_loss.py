"""The focal loss (Lin et al. 2017, section 3), computed from logits in one fused pass."""
from typing import Optional

import torch
import torch.nn.functional as F


def _focal_loss_and_grad(
    logits: torch.Tensor,
    is_foreground: torch.Tensor,
    weight: Optional[torch.Tensor],
    alpha: float,
    gamma: float,
    with_grad: bool,
):
    """
    Element-wise focal loss and, when `with_grad`, its derivative with respect to the logits.

    With s = +1 for a foreground target and -1 for background, z_t = s * z, p_t = sigmoid(z_t)
    and q = 1 - p_t = sigmoid(-z_t): loss = alpha_t * q^gamma * ce with ce = -log(p_t) =
    softplus(-z_t); both come from the logits, so they are finite for any z.
    d loss / dz = -s * alpha_t * q^gamma * (gamma * p_t * ce + q).
    """
    sign = is_foreground.to(logits.dtype).mul_(2.0).sub_(1.0)
    minus_z_t = (logits * sign).neg_()
    q = torch.sigmoid(minus_z_t)
    ce = F.softplus(minus_z_t)
    del minus_z_t
    modulator = q * q if gamma == 2.0 else q.pow(gamma)
    if alpha >= 0:
        # built in the logits' dtype: torch.where on two Python floats would round alpha to float32
        alpha_t = torch.full_like(logits, 1.0 - alpha).masked_fill_(is_foreground, alpha)
        if weight is not None:
            alpha_t.mul_(weight)
    else:
        alpha_t = weight
    loss = ce * modulator
    if alpha_t is not None:
        loss.mul_(alpha_t)
    if not with_grad:
        return loss, None
    # p_t * ce = ce - q * ce; computed in place in ce's memory.
    grad = ce.sub_(ce * q).mul_(gamma).add_(q).mul_(modulator).mul_(sign).neg_()
    if alpha_t is not None:
        grad.mul_(alpha_t)
    return loss, grad


class _FocalLoss(torch.autograd.Function):
    """
    Forward and backward in one pass: the derivative is computed with the loss, from the same
    intermediate terms, and kept for backward (autograd of the textbook formula keeps about six
    full-size temporaries and recomputes the sigmoid).
    """

    @staticmethod
    def forward(ctx, logits, is_foreground, weight, alpha, gamma, reduction):
        loss, grad = _focal_loss_and_grad(logits, is_foreground, weight, alpha, gamma, ctx.needs_input_grad[0])
        ctx.save_for_backward(grad)
        if reduction == "sum":
            return loss.sum()
        if reduction == "mean":
            ctx.numel = loss.numel()
            return loss.mean()
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        if hasattr(ctx, "numel"):
            grad_loss = grad_loss / ctx.numel
        return grad * grad_loss, None, None, None, None, None


_REDUCTIONS = ("none", "sum", "mean")


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """
    FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), with p = sigmoid(logits) and
    alpha_t = alpha for foreground targets, 1 - alpha for background (alpha < 0: no weighting).

    Args:
        logits: (*) raw classifier outputs, any shape.
        targets: (*) same shape, 1 for the anchor's class, 0 for every other class.
        reduction: "none", "sum" or "mean".

    Equal to fvcore's `sigmoid_focal_loss` for 0/1 targets, but finite (with finite gradients)
    for any logit and any gamma >= 0.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction {reduction!r} is not one of {_REDUCTIONS}")
    return _FocalLoss.apply(logits, targets > 0.5, None, float(alpha), float(gamma), reduction)


def sigmoid_focal_loss_from_labels(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """
    The summed focal loss of anchors given by class label instead of one-hot targets.

    Args:
        logits: (M, K) one row of class logits per anchor.
        labels: (M,) in {-1: ignored, 0..K-1: that class is the target, K: background}.
    Returns:
        scalar: `sigmoid_focal_loss(logits, one_hot(labels), reduction="sum")` over the
        anchors with labels >= 0, without building the one-hot matrix or copying the rows.
    """
    classes = torch.arange(logits.shape[1], device=logits.device)
    is_foreground = labels[:, None] == classes
    valid = (labels >= 0).to(logits.dtype)[:, None]
    return _FocalLoss.apply(logits, is_foreground, valid, float(alpha), float(gamma), "sum")
