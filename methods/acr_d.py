"""ACR without anchor distributions, the SimPro paper's ACR-dagger: SPEC section 7."""
import torch
import torch.nn.functional as F
from torch import nn

from methods.common import logit_adjustment, symmetric_kl
from utils.distributed import all_reduce_sum


class ACRd(nn.Module):
    """ACR without anchor distributions (the paper's ACR-dagger): a standard head g and a balanced
    head h with fixed logit adjustments a_k = log(p_l ** tau_k) from the labeled prior p_l."""
    labeled_views = ('weak',)
    unlabeled_views = ('weak', 'strong', 'strong')
    two_heads = True
    labeled_in_pool = True  # the original's pool also holds the labeled images (CIFAR, ImageNet-1k, digits)

    def __init__(self, args, data):
        super().__init__()
        if data.name in ('smallimagenet', 'smallimagenet_1k'):  # the original's labeled view there:
            self.labeled_views = ('crop_flip',)                    # a zero-padded crop, then a flip
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
