"""SimPro (Du, Han, Huang, ICML 2024; LeapLabTHU/SimPro SimPro/train.py), the whole method in one file.

SimPro treats the unknown class distribution of the unlabeled data as a parameter of the
probabilistic model and trains it by EM:

- E-step (every step): the posterior of each unlabeled image's class under the current
  unlabeled prior pi_u, q = softmax(f(u_weak) + log pi_u ** tau), kept where max q >= threshold;
- M-step of the network (every step): the cross-entropy of the logit-adjusted network,
  f + log pi ** tau, on the labeled views and, with the soft targets q, on the strong unlabeled views;
- M-step of the priors (every epoch): pi_u and pi in closed form from the epoch's pseudo labels
  and labeled counts (`ClassPrior.update`).
"""
import torch
import torch.nn.functional as F
from torch import nn

from methods.base import EMA_U, TAU, THRESHOLD, Batch, Method, StepResult
from methods.common import logit_adjustment
from utils.distributed import all_reduce_sum

def scale_ratio(num_labeled: int, num_unlabeled: int, batch_size: int, mu: int) -> float:
    """r = unlabeled batches per pass over the unlabeled set / labeled batches per pass over the
    labeled set, with the floors of drop_last, exactly as the original divides Lx by it."""
    return (num_unlabeled // (mu * batch_size)) / (num_labeled // batch_size)


class ClassPrior(nn.Module):
    """SimPro's class priors and their E-step sums, as buffers (checkpointed with the model).

    pi_u: the unlabeled class prior, starts uniform; pi: the prior of labeled + unlabeled data,
    starts at the labeled class frequencies. S and L sum, over the current epoch, the soft pseudo
    labels of confident unlabeled rows and the labeled class counts; `update` is the closed-form
    M-step.
    """

    def __init__(self, labeled_counts, ema_u: float):
        super().__init__()
        counts = torch.as_tensor(labeled_counts, dtype=torch.float32)
        self.ema_u = ema_u
        self.register_buffer('pi_u', torch.full_like(counts, 1 / len(counts)))
        self.register_buffer('pi', counts / counts.sum())
        self.register_buffer('S', torch.zeros_like(counts))
        self.register_buffer('L', torch.zeros_like(counts))

    @torch.no_grad()
    def accumulate(self, q: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> None:
        self.S += (q * mask.unsqueeze(1)).sum(0)
        self.L.index_add_(0, y, torch.ones_like(y, dtype=self.L.dtype))  # (bincount reads y back on CUDA)

    @torch.no_grad()
    def update(self) -> None:
        """pi_u <- ema_u pi_u + (1-ema_u) S/(sum S + 1);  pi <- ema_u pi + (1-ema_u) (L+S)/sum(L+S).

        Under several processes the sums are first added over all of them, so every process
        holds the same priors (the original updated each GPU's priors from its own shard)."""
        all_reduce_sum(self.S, self.L)
        m = self.ema_u
        self.pi_u.mul_(m).add_((1 - m) * self.S / (self.S.sum() + 1))  # the +1 is the original's
        self.pi.mul_(m).add_((1 - m) * (self.L + self.S) / (self.L + self.S).sum())
        self.S.zero_()
        self.L.zero_()


class SimPro(Method):
    """E-step: q = softmax(f(u_weak) + a_u), mask = max q >= threshold. M-step: logit-adjusted
    CE with a = log(pi ** tau) on both labeled views (divided by r) and soft-target CE on both
    strong unlabeled views; the priors move once per epoch in closed form."""
    flags = (THRESHOLD, TAU, EMA_U)
    labeled_views = {'weak': 'weak', 'strong': 'strong'}
    unlabeled_views = {'weak': 'weak', 'strong': 'strong', 'strong2': 'strong'}

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        self.prior = ClassPrior(data.labeled_per_class, args.ema_u)
        self.tau, self.threshold = args.tau, args.threshold
        self.scale_ratio = scale_ratio(len(data.labeled_idx), len(data.unlabeled_idx), args.batch_size, args.mu)

    def e_step(self, u_weak: torch.Tensor):
        """(q, mask, pseudo label): the class posterior of each unlabeled row under pi_u, the rows
        where it is confident, and its argmax; the epoch's sums for the prior update take them in."""
        # a_u: the priors change only at the end of an epoch, so this is the adjustment
        # "computed at the start of each epoch" (and right after a resume)
        q = torch.softmax(u_weak.detach() + logit_adjustment(self.prior.pi_u, self.tau), dim=-1)
        confidence, pseudo_label = q.max(dim=-1)
        return q, confidence >= self.threshold, pseudo_label

    def m_step_loss(self, logits_x, y, u_strong_views, q, mask):
        """(loss_x, loss_u): the logit-adjusted cross-entropy on every labeled view (divided by r)
        and, against the soft targets q of the confident rows, on every strong unlabeled view."""
        adjust = logit_adjustment(self.prior.pi, self.tau)
        loss_x = F.cross_entropy(logits_x + adjust, y.repeat(2)) / self.scale_ratio
        loss_u = 0.5 * sum((F.cross_entropy(s + adjust, q, reduction='none') * mask).mean() for s in u_strong_views)
        return loss_x, loss_u

    def loss(self, views: Batch) -> StepResult:
        x, u = views.labeled, views.unlabeled
        q, mask, pseudo_label = self.e_step(u.weak.logits)
        self.prior.accumulate(q, mask, x.labels)
        loss_x, loss_u = self.m_step_loss(x.every.logits, x.labels, (u.strong.logits, u.strong2.logits), q, mask)
        return StepResult(loss_x + loss_u, {'loss_x': loss_x, 'loss_u': loss_u}, mask, pseudo_label)

    def end_epoch(self) -> None:
        self.prior.update()  # the closed-form M-step of the priors

    def unlabeled_prior(self) -> torch.Tensor:
        return self.prior.pi_u / self.prior.pi_u.sum()
