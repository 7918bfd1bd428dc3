"""What several methods share: logit adjustment, the symmetric KL, SimPro's scale ratio and its
class-prior module (SPEC sections 6 and 7)."""
import torch
from torch import nn

from utils.distributed import all_reduce_sum


def logit_adjustment(prior: torch.Tensor, tau: float) -> torch.Tensor:
    """log(prior ** tau + 1e-12), added to (or subtracted from) logits."""
    return torch.log(prior ** tau + 1e-12)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """0.5 * KL(p || q) + 0.5 * KL(q || p) between two distributions (renormalised)."""
    p, q = (x.double().clamp_min(1e-12) for x in (p, q))
    p, q = p / p.sum(), q / q.sum()
    return float(0.5 * (p * (p / q).log()).sum() + 0.5 * (q * (q / p).log()).sum())


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
