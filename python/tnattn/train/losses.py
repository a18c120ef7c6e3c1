"""Training losses: re-exported from :mod:`tnattn.models.head`, where each loss lives with its
closed-form gradient (kept so that ``tnattn.train.losses`` imports keep working)."""

from tnattn.models.head import LOSSES, compute_loss, make_loss, member_losses_and_grads

__all__ = ["compute_loss", "make_loss", "member_losses_and_grads", "LOSSES"]
