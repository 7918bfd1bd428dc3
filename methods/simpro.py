"""SimPro (Du, Han, Huang, ICML 2024): SPEC section 6."""
import torch
import torch.nn.functional as F
from torch import nn

from methods.common import ClassPrior, logit_adjustment, scale_ratio


class SimPro(nn.Module):
    """E-step: q = softmax(f(u_weak) + a_u), mask = max q >= threshold. M-step: logit-adjusted
    CE with a = log(pi ** tau) on both labeled views (divided by r) and soft-target CE on both
    strong unlabeled views; the priors move once per epoch in closed form."""
    labeled_views = ('weak', 'strong')
    unlabeled_views = ('weak', 'strong', 'strong')
    two_heads = False
    labeled_in_pool = False  # the unlabeled pool holds the unlabeled images only

    def __init__(self, args, data):
        super().__init__()
        self.prior = ClassPrior(data.labeled_per_class, args.ema_u)
        self.tau, self.threshold = args.tau, args.threshold
        self.scale_ratio = scale_ratio(len(data.labeled_idx), len(data.unlabeled_idx), args.batch_size, args.mu)

    def loss(self, logits, y, u_index):
        # a_u and a: the priors change only at the end of an epoch, so these are the
        # adjustments "computed at the start of each epoch" (and right after a resume).
        adjust_u = logit_adjustment(self.prior.pi_u, self.tau)
        adjust = logit_adjustment(self.prior.pi, self.tau)
        B = len(y)
        logits_x = logits[:2 * B]
        u_weak, u_strong, u_strong2 = logits[2 * B:].chunk(3)
        q = torch.softmax(u_weak.detach() + adjust_u, dim=-1)            # E-step
        confidence, pseudo_label = q.max(dim=-1)
        mask = confidence >= self.threshold
        self.prior.accumulate(q, mask, y)
        loss_x = F.cross_entropy(logits_x + adjust, y.repeat(2)) / self.scale_ratio
        loss_u = 0.5 * sum((F.cross_entropy(s + adjust, q, reduction='none') * mask).mean()
                           for s in (u_strong, u_strong2))
        return loss_x + loss_u, {'loss_x': loss_x, 'loss_u': loss_u}, mask, pseudo_label

    def end_epoch(self) -> None:
        self.prior.update()

    def unlabeled_prior(self) -> torch.Tensor:
        return self.prior.pi_u / self.prior.pi_u.sum()

    @staticmethod
    def eval_logits(output):
        return output
