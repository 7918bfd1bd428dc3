"""BOAT: Boosting Consistency in Dual Training for Long-Tailed Semi-Supervised Learning (Gan, Wei
and Zhang, arXiv:2406.13187 v1, 2024), as its official code trains it (Gank0078/BOAT train.py).

ACR's two heads on one WideResNet, without ACR's fixed adjustments and anchors:
- the standard head g learns the labeled images with a logit adjustment by log p_l - log qbal (its
  "alignment" to the balanced head's estimate of the unlabeled distribution), and the unlabeled
  images with FixMatch's pseudo labels (plain softmax of g, threshold);
- the balanced head h learns the labeled images with log(p_l ** tau2) added (logit-adjusted loss),
  and the unlabeled images with g's pseudo labels debiased by qhat (argmax softmax(g - tau log qhat)),
  every row weighted by w = s confm / simm, no threshold;
- qhat and qbal are running means (momentum --emap) of g's and h's predictions on the weak views,
  updated at every step from the first; confm and simm running means (0.9) of the debiased
  confidence and of s, the largest per-class product of g's plain and qhat-debiased predictions;
- the evaluation reads h - tau_b log qbal of the weight EMA.
"""
import torch
import torch.nn.functional as F

from methods.acr_d import TAU2
from methods.base import TAU, THRESHOLD, Batch, Flag, Method, StepResult, finite
from methods.common import logit_adjustment
from utils.distributed import mean_over_processes

SCORE_MOMENTUM, SCORE_START = 0.9, 0.1  # of confm and simm (train.py:558-564): fixed in the official code
FLAGS = (
    THRESHOLD, TAU, TAU2,
    Flag('--tau3', dict(type=float, default=2.0, help="strength of the standard head's alignment: log p_l - log qbal "
                                                      "added to its labeled logits"),
         'a finite number', finite),
    Flag('--tau4', dict(type=float, default=2.0, help='exponent of qhat in the weight of the balanced unlabeled loss '
                                                      '(the official script default; its README runs 1)'),
         'a finite number', finite),
    Flag('--tau-b', dict(type=float, default=2.0, help='exponent of qbal in the post-hoc adjustment of the evaluated '
                                                       'balanced head'),
         'a finite number', finite),
    Flag('--tw', dict(type=float, default=1.0, help='temperature of the softmaxes of the weight'),
         'a finite number > 0', lambda v: finite(v) and v > 0),
    Flag('--emap', dict(type=float, default=0.999, help='momentum of qhat and qbal, every step'),
         'a number in [0, 1]', lambda v: finite(v) and 0 <= v <= 1))


class BOAT(Method):
    """The standard head g (NetworkOutput.logits) and the balanced head h (.balanced)."""
    flags = FLAGS
    unlabeled_views = {'weak': 'weak', 'strong': 'strong', 'strong2': 'strong'}
    two_heads = True
    labeled_in_pool = True  # (as ACR's data code; BOAT no longer leaves them out of any term)

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        if data.name in ('smallimagenet', 'smallimagenet_1k'):  # the labeled view of its data code there
            self.labeled_views = {'weak': 'crop_flip'}
        counts = torch.as_tensor(data.labeled_per_class, dtype=torch.float32)
        self.threshold, self.tau, self.tau3, self.tau4 = args.threshold, args.tau, args.tau3, args.tau4
        self.tau_b, self.temperature, self.momentum = args.tau_b, args.tw, args.emap
        self.register_buffer('p_l', counts / counts.sum())
        self.register_buffer('adjust_bal', logit_adjustment(self.p_l, args.tau2))
        uniform = torch.full_like(self.p_l, 1 / len(self.p_l))
        self.register_buffer('qhat', uniform.clone())  # g's mean prediction on the weak unlabeled views
        self.register_buffer('qbal', uniform.clone())  # h's
        self.register_buffer('confm', torch.tensor(SCORE_START))  # the mean debiased confidence
        self.register_buffer('simm', torch.tensor(SCORE_START))   # the mean s

    def loss(self, views: Batch) -> StepResult:
        """The official step's order: each estimate is updated before the term that reads it."""
        x, u = views.labeled, views.unlabeled
        y, m = x.labels, self.momentum
        loss_x_b = F.cross_entropy(x.weak.balanced + self.adjust_bal, y)
        g_weak, h_weak = u.weak.logits.detach(), u.weak.balanced.detach()
        probs = torch.softmax(g_weak, -1)
        with torch.no_grad():
            self.qhat.mul_(m).add_(mean_over_processes(probs), alpha=1 - m)
        confidence, pseudo_label = probs.max(-1)
        mask = confidence >= self.threshold
        confidence_b, pseudo_label_b = torch.softmax(g_weak - self.tau * self.qhat.log(), -1).max(-1)
        with torch.no_grad():
            self.qbal.mul_(m).add_(mean_over_processes(torch.softmax(h_weak, -1)), alpha=1 - m)
        loss_x = F.cross_entropy(x.weak.logits + self.tau3 * (self.p_l.log() - self.qbal.log()), y)
        t = self.temperature
        s = (torch.softmax(g_weak / t, -1) * torch.softmax((g_weak - self.tau4 * self.qhat.log()) / t, -1)).max(-1)[0]
        with torch.no_grad():
            self.confm.mul_(SCORE_MOMENTUM).add_(mean_over_processes(confidence_b), alpha=1 - SCORE_MOMENTUM)
            self.simm.mul_(SCORE_MOMENTUM).add_(mean_over_processes(s), alpha=1 - SCORE_MOMENTUM)
        weight = s * self.confm / self.simm
        loss_u = (F.cross_entropy(torch.cat([u.strong.logits, u.strong2.logits]), pseudo_label.repeat(2),
                                  reduction='none') * mask.repeat(2)).mean()
        loss_u_b = (F.cross_entropy(torch.cat([u.strong.balanced, u.strong2.balanced]), pseudo_label_b.repeat(2),
                                    reduction='none') * weight.repeat(2)).mean()
        terms = {'loss_x': loss_x + loss_x_b, 'loss_u': loss_u + loss_u_b, 'loss_x_g': loss_x, 'loss_x_h': loss_x_b,
                 'loss_u_g': loss_u, 'loss_u_h': loss_u_b, 'weight': weight.mean()}
        return StepResult(loss_x + loss_u + loss_x_b + loss_u_b, terms, mask, pseudo_label)

    def eval_logits(self, output):
        """The balanced head of the weight EMA, adjusted by the training network's qbal."""
        return output.balanced - self.tau_b * self.qbal.log()

    def unlabeled_prior(self) -> torch.Tensor:
        return self.qbal / self.qbal.sum()

    def metrics(self) -> dict:
        return {'confm': float(self.confm), 'simm': float(self.simm), 'qhat': self.qhat.tolist()}
