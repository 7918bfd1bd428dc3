"""The methods: the small pieces of the one training loop in train.py that differ.

A method names the views it draws, turns the logits of one concatenated forward pass into
its loss (doing its E-step on the way), updates its class-prior estimate once per epoch,
and says which logits are evaluated. Symbols follow SPEC sections 6 and 7.
"""
import torch
import torch.nn.functional as F
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


class ACRd(nn.Module):
    """ACR without anchor distributions (the paper's ACR-dagger): a standard head g and a balanced
    head h with fixed logit adjustments a_k = log(p_l ** tau_k) from the labeled prior p_l."""
    labeled_views = ('weak',)
    unlabeled_views = ('weak', 'strong', 'strong')
    two_heads = True
    labeled_in_pool = True  # the original's pool also holds the labeled images (CIFAR, ImageNet-1k, digits)

    def __init__(self, args, data):
        super().__init__()
        counts = torch.as_tensor(data.labeled_per_class, dtype=torch.float32)
        p_l = counts / counts.sum()
        self.threshold = args.threshold
        self.register_buffer('adjust_1', logit_adjustment(p_l, args.tau1))
        self.register_buffer('adjust_12', logit_adjustment(p_l, args.tau12))
        self.register_buffer('adjust_2', logit_adjustment(p_l, args.tau2))
        # ACR's estimate of the unlabeled prior, from h's confident predictions on unlabeled
        # images that are not labeled ones; logged only (with fixed tau it changes nothing).
        self.est_epoch, self.ema_u = args.est_epoch, args.ema_u
        self.register_buffer('anchors', torch.stack([torch.full_like(p_l, 1 / len(p_l)), p_l, p_l.flip(0)]))
        self.register_buffer('pi_u', torch.full_like(p_l, 1 / len(p_l)))
        self.register_buffer('counts', torch.zeros_like(p_l))
        self.register_buffer('epoch', torch.zeros((), dtype=torch.long))
        self.register_buffer('is_labeled', torch.as_tensor(data.unlabeled_is_labeled, dtype=torch.bool),
                             persistent=False)

    def loss(self, output, y, u_index):
        g, h = output
        B = len(y)
        g_x, (g_weak, g_s, g_s2) = g[:B], g[B:].chunk(3)
        h_x, (h_weak, h_s, h_s2) = h[:B], h[B:].chunk(3)
        loss_x = F.cross_entropy(g_x, y)
        loss_x_b = F.cross_entropy(h_x + self.adjust_2, y)
        g_weak, h_weak = g_weak.detach(), h_weak.detach()
        conf_1, label_1 = torch.softmax(g_weak - self.adjust_1, -1).max(-1)
        conf_12, label_12 = torch.softmax(g_weak - self.adjust_12, -1).max(-1)
        conf_h, label_h = torch.softmax(h_weak, -1).max(-1)
        conf_g = torch.softmax(g_weak, -1).max(-1).values
        mask = (conf_1 >= self.threshold) | (conf_g >= self.threshold)
        mask_b = (conf_12 >= self.threshold) | (conf_h >= self.threshold)
        loss_u = (F.cross_entropy(torch.cat([g_s, g_s2]), label_1.repeat(2), reduction='none') * mask.repeat(2)).mean()
        loss_u_b = (F.cross_entropy(torch.cat([h_s, h_s2]), label_12.repeat(2), reduction='none')
                    * mask_b.repeat(2)).mean()
        with torch.no_grad():
            counted = (conf_h >= self.threshold) & ~self.is_labeled[u_index]
            self.counts.index_add_(0, label_h, counted.to(self.counts.dtype))  # no mask indexing: no sync
        terms = {'loss_x': loss_x + loss_x_b, 'loss_u': loss_u + loss_u_b, 'loss_x_g': loss_x,
                 'loss_x_h': loss_x_b, 'loss_u_g': loss_u, 'loss_u_h': loss_u_b}
        return loss_x + loss_u + loss_x_b + loss_u_b, terms, mask, label_1

    @torch.no_grad()
    def end_epoch(self) -> None:
        all_reduce_sum(self.counts)
        self.epoch += 1
        if self.epoch > self.est_epoch and self.counts.sum() > 0:
            self.pi_u.mul_(self.ema_u).add_((1 - self.ema_u) * self.counts / self.counts.sum())
        self.counts.zero_()

    def unlabeled_prior(self) -> torch.Tensor:
        return self.pi_u / self.pi_u.sum()

    def anchor_kl(self) -> dict:
        """Symmetric KL of the estimate to ACR's three anchors (uniform, consistent, reversed)."""
        return {name: symmetric_kl(self.pi_u, a) for name, a in zip(('uniform', 'consistent', 'reversed'),
                                                                     self.anchors)}

    @staticmethod
    def eval_logits(output):
        return output[1]  # the balanced head


class FixMatch(nn.Module):
    """The baseline: hard pseudo labels argmax softmax(g(u_weak)) where max >= threshold, no logit
    adjustment and no prior estimate (Sohn et al., 2020)."""
    labeled_views = ('weak',)
    unlabeled_views = ('weak', 'strong')
    two_heads = False
    labeled_in_pool = False

    def __init__(self, args, data):
        super().__init__()
        self.threshold = args.threshold

    def loss(self, logits, y, u_index):
        B = len(y)
        u_weak, u_strong = logits[B:].chunk(2)
        confidence, pseudo_label = torch.softmax(u_weak.detach(), dim=-1).max(dim=-1)
        mask = confidence >= self.threshold
        loss_x = F.cross_entropy(logits[:B], y)
        loss_u = (F.cross_entropy(u_strong, pseudo_label, reduction='none') * mask).mean()
        return loss_x + loss_u, {'loss_x': loss_x, 'loss_u': loss_u}, mask, pseudo_label

    def end_epoch(self) -> None:
        pass

    def unlabeled_prior(self):
        return None  # FixMatch does not estimate it

    @staticmethod
    def eval_logits(output):
        return output


METHODS = {'SimPro': SimPro, 'ACR_d': ACRd, 'FixMatch': FixMatch}
