"""ACR without anchor distributions, the SimPro paper's ACR-dagger (LeapLabTHU/SimPro
ACR_d/train.py), and the estimate of the unlabeled class distribution that full ACR adapts to
(Gank0078/ACR train.py)."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import EMA_U, EST_EPOCH, THRESHOLD, Batch, Flag, Method, StepResult, finite
from methods.common import logit_adjustment
from utils import distributed

ANCHORS = ('consistent', 'uniform', 'reversed')
TAU2 = Flag('--tau2', dict(type=float, default=2.0, help='adjustment of the balanced labeled loss'),
            'a finite number', finite)  # (read by BOAT too)
FLAGS = (  # read by ACR_d and ACR
    THRESHOLD, EMA_U,
    Flag('--tau1', dict(type=float, default=2.0, help='adjustment of the standard pseudo labels (ACR: its maximum)'),
         'a finite number', finite),
    Flag('--tau12', dict(type=float, default=2.0, help='adjustment of the balanced pseudo labels'),
         'a finite number', finite),
    TAU2,
    EST_EPOCH,
    Flag('--anchor-estimate', dict(choices=('presence', 'counts'), default='presence',
                                   help="a step's evidence per class for the estimate: presence (the official "
                                        "code's update, which overwrites: the last row predicted as the class "
                                        "decides) or counts (the confident rows of the class)")))


class AnchorEstimate(nn.Module):
    """ACR's estimate u of the unlabeled class distribution, updated at every step, and the running
    sum S of its symmetric KLs to the three anchors (p_l, uniform, p_l reversed) over an epoch,
    which sets tau1 at the next epoch's start (Gank0078/ACR train.py:467-474, 555-571).

    A step's evidence n is per class a 0/1 presence, not a count: the reference writes
    `n[label] += v` with indexed assignment, which overwrites, so for a class predicted on several
    rows the last of them (in batch order) decides. Here that row is found with a scatter-max of
    row indices, the same on every device; under several processes the rows are those of the
    global batch in rank order, so every process holds the same u and S. `counts` (--anchor-estimate
    counts) counts the rows instead.
    """

    def __init__(self, p_l: torch.Tensor, ema_u: float, est_epoch: int, eval_step: int, tau_max: float,
                 counts: bool = False):
        super().__init__()
        self.ema_u, self.est_epoch, self.eval_step, self.tau_max = ema_u, est_epoch, eval_step, tau_max
        self.counts = counts  # count the rows per class instead (the paper's reading, not the code's)
        uniform = torch.full_like(p_l, 1 / len(p_l))
        self.register_buffer('anchors', torch.stack([p_l, uniform, p_l.flip(0)]))  # in ANCHORS' order
        self.register_buffer('u', uniform.clone())
        self.register_buffer('kl_sum', torch.zeros(3))
        self.register_buffer('kl_mean', torch.zeros(3))  # S / eval_step of the last epoch, as tau1 reads it
        self.register_buffer('epoch', torch.zeros((), dtype=torch.long))  # the current (0-based) epoch

    @torch.no_grad()
    def evidence(self, label: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
        """n[c] = counted[j] of the last row j (of the global batch) whose label is c, else 0; with
        `counts`, the number of counted rows whose label is c."""
        if self.counts:
            n = torch.zeros_like(self.u).index_add_(0, label, counted.to(self.u.dtype))
            distributed.all_reduce_sum(n)
            return n
        row = torch.arange(len(label), device=label.device) + distributed.rank() * len(label)
        key = 2 * (row + 1) + counted.long()  # the largest key of a class is its last row; its parity is v
        last = torch.zeros(len(self.u), dtype=torch.long, device=label.device).scatter_reduce(0, label, key, 'amax')
        distributed.all_reduce_max(last)
        return (last % 2).to(self.u.dtype)

    @torch.no_grad()
    def step(self, label: torch.Tensor, counted: torch.Tensor) -> None:
        """While epoch > est_epoch and some class is present: u <- ema_u u + (1 - ema_u) n / sum(n),
        then S += SKL(u, anchor) for each anchor. Branch-free, so no step reads a device value."""
        n = self.evidence(label, counted)
        update = (self.epoch > self.est_epoch) & (n.sum() > 0)
        u = self.ema_u * self.u + (1 - self.ema_u) * n / n.sum().clamp_min(1)
        self.u.copy_(torch.where(update, u, self.u))
        # 0.5 KL(u || a) + 0.5 KL(a || u) = 0.5 sum (u - a)(log u - log a), for the three anchors at once
        kl = 0.5 * ((u - self.anchors) * (u.log() - self.anchors.log())).sum(1)
        self.kl_sum += torch.where(update, kl, torch.zeros_like(kl))

    @torch.no_grad()
    def end_epoch(self):
        """Start the next epoch; once it is past est_epoch, return its tau1 = tau_max * softmax(S / eval_step)
        [consistent] (None before, or when the exponentials overflow, which keeps the previous tau1).
        S is divided by eval_step however many steps added to it, and restarts at zero."""
        self.epoch += 1
        tau1 = None
        if self.epoch > self.est_epoch:
            self.kl_mean.copy_(self.kl_sum / self.eval_step)
            e = self.kl_mean.exp()
            tau1 = float(self.tau_max * e[0] / e.sum())  # tau_min = 0
            tau1 = None if math.isnan(tau1) else tau1
        self.kl_sum.zero_()
        return tau1

    def unlabeled_prior(self) -> torch.Tensor:
        return self.u / self.u.sum()

    def metrics(self) -> dict:
        return {'kl_anchors': dict(zip(ANCHORS, self.kl_mean.tolist()))}


class ACRd(Method):
    """ACR without anchor distributions (the paper's ACR-dagger): a standard head g and a balanced
    head h with fixed logit adjustments a_k = log(p_l ** tau_k) from the labeled prior p_l. ACR's
    estimate of the unlabeled distribution runs alongside, logged only."""
    flags = FLAGS
    unlabeled_views = {'weak': 'weak', 'strong': 'strong', 'strong2': 'strong'}
    two_heads = True
    labeled_in_pool = True  # the original's pool also holds the labeled images (CIFAR, ImageNet-1k, digits)

    @classmethod
    def idle_parts(cls, args, steps: int) -> list:
        epochs = steps // args.eval_step
        if args.est_epoch < epochs - 1:
            return []
        return [f'the estimate of the unlabeled distribution never updates (it starts in epoch --est-epoch + 2 = '
                f'{args.est_epoch + 2}; the run has {epochs})']

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        if data.name in ('smallimagenet', 'smallimagenet_1k'):  # the original's weak labeled view there:
            self.labeled_views = {'weak': 'crop_flip'}             # a zero-padded crop, then a flip
        counts = torch.as_tensor(data.labeled_per_class, dtype=torch.float32)
        self.threshold = args.threshold
        self.register_buffer('p_l', counts / counts.sum())
        self.register_buffer('adjust_1', logit_adjustment(self.p_l, args.tau1))
        self.register_buffer('adjust_12', logit_adjustment(self.p_l, args.tau12))
        self.register_buffer('adjust_2', logit_adjustment(self.p_l, args.tau2))
        self.estimate = AnchorEstimate(self.p_l, args.ema_u, args.est_epoch, args.eval_step, tau_max=args.tau1,
                                       counts=args.anchor_estimate == 'counts')
        # the tau1 the estimate gives (ACR_d computes it, as the original, and keeps its fixed one)
        self.register_buffer('tau1', torch.tensor(float(args.tau1)))
        self.register_buffer('is_labeled', torch.as_tensor(data.unlabeled_is_labeled, dtype=torch.bool),
                             persistent=False)

    def loss(self, views: Batch) -> StepResult:
        """g: the standard head's logits, h: the balanced head's."""
        x, u = views.labeled, views.unlabeled
        y, g_s, g_s2, h_s, h_s2 = x.labels, u.strong.logits, u.strong2.logits, u.strong.balanced, u.strong2.balanced
        loss_x = F.cross_entropy(x.weak.logits, y)
        loss_x_b = F.cross_entropy(x.weak.balanced + self.adjust_2, y)
        g_weak, h_weak = u.weak.logits.detach(), u.weak.balanced.detach()
        conf_1, label_1 = torch.softmax(g_weak - self.adjust_1, -1).max(-1)
        conf_12, label_12 = torch.softmax(g_weak - self.adjust_12, -1).max(-1)
        conf_h, label_h = torch.softmax(h_weak, -1).max(-1)
        conf_g = torch.softmax(g_weak, -1).max(-1).values
        mask = (conf_1 >= self.threshold) | (conf_g >= self.threshold)
        mask_b = (conf_12 >= self.threshold) | (conf_h >= self.threshold)
        loss_u = (F.cross_entropy(torch.cat([g_s, g_s2]), label_1.repeat(2), reduction='none') * mask.repeat(2)).mean()
        loss_u_b = (F.cross_entropy(torch.cat([h_s, h_s2]), label_12.repeat(2), reduction='none')
                    * mask_b.repeat(2)).mean()
        self.estimate.step(label_h, (conf_h >= self.threshold) & ~self.is_labeled[u.index])
        terms = {'loss_x': loss_x + loss_x_b, 'loss_u': loss_u + loss_u_b, 'loss_x_g': loss_x,
                 'loss_x_h': loss_x_b, 'loss_u_g': loss_u, 'loss_u_h': loss_u_b}
        return StepResult(loss_x + loss_u + loss_x_b + loss_u_b, terms, mask, label_1)

    def end_epoch(self) -> None:
        tau1 = self.estimate.end_epoch()
        if tau1 is not None:
            self.set_tau1(tau1)

    def set_tau1(self, tau1: float) -> None:
        self.tau1.fill_(tau1)  # logged only: ACR_d's adjustment a_1 keeps the fixed --tau1

    def unlabeled_prior(self) -> torch.Tensor:
        return self.estimate.unlabeled_prior()

    def metrics(self) -> dict:
        """Logged with each evaluation: the last epoch's mean anchor KLs and the tau1 they give."""
        return {**self.estimate.metrics(), 'tau1': float(self.tau1)}

    def eval_logits(self, output):
        return output.balanced  # the balanced head
