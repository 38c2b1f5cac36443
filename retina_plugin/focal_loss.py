"""The focal loss (Lin et al. 2017, section 3), computed from logits."""
import torch
import torch.nn.functional as F


def _focal_terms(logits, targets, gamma):
    # z_t = z for a foreground target, -z for background, so p_t = sigmoid(z_t) and
    # 1 - p_t = sigmoid(-z_t); both log terms come from log-sigmoid and stay finite at any z.
    sign = 2.0 * targets - 1.0
    z_t = logits * sign
    ce = F.softplus(-z_t)  # -log(p_t)
    one_minus_p_t = torch.sigmoid(-z_t)
    return sign, ce, one_minus_p_t, one_minus_p_t.pow(gamma)


def _alpha_t(targets, alpha):
    if alpha < 0:
        return None
    return targets * (2.0 * alpha - 1.0) + (1.0 - alpha)  # alpha on fg, 1 - alpha on bg


class _SigmoidFocalLoss(torch.autograd.Function):
    """
    Forward and backward of the element-wise focal loss in one pass each, keeping only the
    inputs for backward (autograd of the textbook formula keeps ~6 full-size temporaries).
    """

    @staticmethod
    def forward(ctx, logits, targets, alpha, gamma):
        ctx.save_for_backward(logits, targets)
        ctx.alpha, ctx.gamma = alpha, gamma
        with torch.no_grad():
            _, ce, _, modulator = _focal_terms(logits, targets, gamma)
            loss = ce.mul_(modulator)
            alpha_t = _alpha_t(targets, alpha)
            if alpha_t is not None:
                loss.mul_(alpha_t)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        logits, targets = ctx.saved_tensors
        gamma = ctx.gamma
        with torch.no_grad():
            sign, ce, q, modulator = _focal_terms(logits, targets, gamma)
            # d/dz_t [q^gamma * ce] with q = 1 - p_t = -q^gamma * (gamma * (1 - q) * ce + q)
            grad = ce.mul_(1.0 - q).mul_(gamma).add_(q).mul_(modulator).mul_(sign).neg_()
            alpha_t = _alpha_t(targets, ctx.alpha)
            if alpha_t is not None:
                grad.mul_(alpha_t)
            grad.mul_(grad_loss)
        return grad, None, None, None


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
        targets: (*) same shape, 1.0 for the anchor's class, 0.0 for every other class.
        reduction: "none", "sum" or "mean".

    Equal to fvcore's `sigmoid_focal_loss` for 0/1 targets, but finite (with finite gradients)
    for any logit, and with one fused forward/backward.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    loss = _SigmoidFocalLoss.apply(logits, targets.to(logits.dtype), float(alpha), float(gamma))
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    if reduction != "none":
        raise ValueError(f"reduction {reduction!r} is not one of 'none', 'sum', 'mean'")
    return loss
