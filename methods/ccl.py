"""CCL (Zhou et al., NeurIPS 2024, "Continuous Contrastive Learning for Long-Tailed Semi-Supervised
Recognition"), as its official code computes it (zhouzihao11/CCL at 0410cb1: train.py and
loss/semiConLoss.py). Built on ACR's two heads; FIDELITY.md, "CCL", says where we differ.

Per step, with p_l the labeled prior, p_u the estimate of the unlabeled distribution, p_all the
estimate of the whole (labeled + unlabeled) distribution and r = mu / (mu + 1):
- classification: the standard head g on the labeled views and, with the combined pseudo label, on
  the strong unlabeled views; the balanced head h likewise, adjusted by log p_l ** tau (labeled)
  and log p_all ** tau (unlabeled). The combined pseudo label is softmax(c / T) of
  c = (g(u_weak) - log((1 - r) p_l + r p_all) + log p_u ** (1 + tau / 2)) / 2 + h(u_weak) / 2,
  kept where its maximum >= --threshold;
- the class-balanced supervised contrastive loss: class probabilities of each unlabeled view from
  a Gaussian kernel over the projected labeled features and the learnable class centres, propagated
  among the unlabeled rows; the strong views learn the sharpened weak view's;
- the soft contrastive loss over the labeled strong views and the strong unlabeled views whose
  energy -logsumexp(c / T) is at most -8.75, with the sharpened combined pseudo labels as their
  continuous labels.
loss = lambda1 * classification + lambda2 * balanced contrastive + (1 - lambda1) * soft contrastive.
Every --upbatch steps of an epoch past --est-epoch: p_u <- alpha p_u + (1 - alpha) n_u / sum(n_u),
p_all <- beta p_all + (1 - beta) n_all / sum(n_all), with n_all the confident pseudo labels and n_u
those of the selected pool images that are not labeled, each counted from ones since the last update.
"""
import torch
import torch.nn.functional as F

from methods.base import EST_EPOCH, TAU, THRESHOLD, Batch, Flag, Method, StepResult, finite
from methods.common import logit_adjustment
from utils import distributed

ENERGY_MAX = -8.75   # an unlabeled row enters the soft contrastive loss when its energy is at most this
SHARPEN = 4.0        # exponent of the continuous pseudo labels (then renormalised)
TEMPERATURE = 0.1    # of the Gaussian kernel over unit-norm features
PROPAGATION = 0.2    # alpha of the propagation among unlabeled rows, (1 - alpha) (I - alpha S)^-1

in_unit = ('a number in [0, 1]', lambda v: finite(v) and 0 <= v <= 1)
FLAGS = (
    THRESHOLD, TAU, EST_EPOCH,
    Flag('--upbatch', dict(type=int, default=500, help='steps of an epoch between updates of the two estimates'),
         'an integer >= 1', lambda v: v >= 1),
    Flag('--alpha', dict(type=float, default=0.5, help='momentum of the estimate of the unlabeled distribution'),
         *in_unit),
    Flag('--beta', dict(type=float, default=0.5, help='momentum of the estimate of the whole distribution'), *in_unit),
    Flag('--lambda1', dict(type=float, default=0.7, help='weight of the classification loss (1 - lambda1: of the '
                                                         'soft contrastive loss)'), 'a finite number', finite),
    Flag('--lambda2', dict(type=float, default=1.0, help='weight of the class-balanced contrastive loss'),
         'a finite number', finite),
    Flag('--T', dict(type=float, default=1.0, help='temperature of the combined pseudo label'),
         'a finite number > 0', lambda v: finite(v) and v > 0))


def sharpen(p: torch.Tensor) -> torch.Tensor:
    p = p ** SHARPEN
    return p / p.sum(dim=1, keepdim=True)


def propagated_probabilities(labeled: torch.Tensor, labels: torch.Tensor, unlabeled: torch.Tensor) -> torch.Tensor:
    """Class probabilities of the unlabeled rows (unlabelProbability): a Gaussian kernel over their
    similarity to the labeled rows, per class divided by the class's label mass, then propagated
    among the unlabeled rows by (1 - a) (I - a softmax(U U^T))^-1. The inverse is taken without an
    error check (no host read): I - a S is strictly diagonally dominant, always invertible."""
    similarity = torch.softmax(unlabeled @ unlabeled.T, dim=1)
    eye = torch.eye(len(unlabeled), dtype=unlabeled.dtype, device=unlabeled.device)
    propagate = torch.linalg.inv_ex(eye - PROPAGATION * similarity).inverse
    kernel = torch.exp(unlabeled @ labeled.T / TEMPERATURE)
    logits = torch.log(kernel @ labels / labels.sum(dim=0))
    return propagate @ ((1 - PROPAGATION) * torch.softmax(logits, dim=1))


def cross_entropy(target: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return -(target * torch.log(p)).sum(dim=1).mean()


def balanced_contrastive_loss(labeled, labels, weak, strong, strong2) -> torch.Tensor:
    """SemiConLoss: the strong views' propagated probabilities learn the sharpened weak view's, and
    their mean its own entropy."""
    with torch.no_grad():
        target = sharpen(propagated_probabilities(labeled, labels, weak))
    p1, p2 = (propagated_probabilities(labeled, labels, view) for view in (strong, strong2))
    mean = (p1 + p2) / 2
    return (cross_entropy(target, p1) + cross_entropy(target, p2) + cross_entropy(mean, mean)) / 3


def soft_contrastive_loss(features, labels, kept, num_centres: int) -> torch.Tensor:
    """softConLoss over the rows after the first num_centres (the class centres, which only serve as
    keys): cross-entropy of each row's continuous label against log(K y / (sum y - y_i)), K the
    kernel without its diagonal. A row not `kept` has a zero label, so it adds nothing to any other
    row's sums, and its own term is left out of the mean (the official code drops such rows)."""
    kernel = torch.exp(features @ features.T / TEMPERATURE)
    kernel = kernel * (1 - torch.eye(len(features), dtype=kernel.dtype, device=kernel.device))
    logits = torch.log(kernel @ labels / (labels.sum(dim=0) - labels))[num_centres:]
    terms = -(labels[num_centres:] * torch.log_softmax(logits, dim=1)).sum(dim=1)
    kept = kept[num_centres:].to(terms.dtype)
    return (terms * kept).sum() / kept.sum()


class CCL(Method):
    """CCL: ACR's two heads with one pseudo label from both, the class-balanced and the soft
    contrastive losses on a projection of the features, and estimates of the unlabeled and the
    whole distribution (module docstring). The balanced head is evaluated, as the official code
    reports it."""
    flags = FLAGS
    defaults = {'tau': 2.0}
    labeled_views = {'weak': 'weak', 'contrastive': 'contrastive', 'contrastive2': 'contrastive'}
    unlabeled_views = {'weak': 'weak', 'strong': 'strong', 'strong2': 'strong'}
    two_heads = True
    projection_heads = True
    labeled_in_pool = True  # built on ACR's code: the pool also holds the labeled images

    @classmethod
    def idle_parts(cls, args, steps: int) -> list:
        epochs = steps // args.eval_step
        if args.upbatch > args.eval_step:
            return [f'the two estimates never update (--upbatch {args.upbatch} is longer than an epoch of '
                    f'--eval-step {args.eval_step})']
        if args.est_epoch >= epochs - 1:
            return [f'the two estimates never update (they start in epoch --est-epoch + 2 = {args.est_epoch + 2}; '
                    f'the run has {epochs})']
        return []

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        counts = torch.as_tensor(data.labeled_per_class, dtype=torch.float32)
        self.threshold, self.tau, self.temperature = args.threshold, args.tau, args.T
        self.alpha, self.beta, self.upbatch, self.est_epoch = args.alpha, args.beta, args.upbatch, args.est_epoch
        self.lambda1, self.lambda2, self.unlabeled_weight = args.lambda1, args.lambda2, max(1.5, args.mu)
        self.pool_share = args.mu / (args.mu + 1)  # r: the unlabeled rows' share of a step's weak rows
        self.register_buffer('p_l', counts / counts.sum())
        self.register_buffer('p_u', torch.full_like(self.p_l, 1 / len(counts)))
        self.register_buffer('p_all', self.p_l.clone())
        self.register_buffer('n_u', torch.ones_like(self.p_l))     # counted since the last update, from ones
        self.register_buffer('n_all', torch.ones_like(self.p_l))
        self.register_buffer('batch', torch.zeros((), dtype=torch.long))  # steps taken in this epoch
        self.register_buffer('epoch', torch.zeros((), dtype=torch.long))  # 0-based
        self.register_buffer('is_labeled', torch.as_tensor(data.unlabeled_is_labeled, dtype=torch.bool),
                             persistent=False)
        # constants of every step, made once: the labeled adjustment and the centres' labels (as the
        # official code: all ones)
        self.register_buffer('adjust_l', logit_adjustment(self.p_l, self.tau), persistent=False)
        self.register_buffer('centre_labels', torch.ones(len(counts), len(counts)), persistent=False)

    def loss(self, views: Batch) -> StepResult:
        """g: the standard head's logits, h: the balanced head's, z: the projected features."""
        x, u = views.labeled, views.unlabeled
        y, B, C = x.labels, len(x.labels), len(self.p_l)
        g_x, h_x = x.weak.logits, x.weak.balanced
        g_weak, g_s, g_s2 = u.weak.logits, u.strong.logits, u.strong2.logits
        h_weak, h_s, h_s2 = u.weak.balanced, u.strong.balanced, u.strong2.balanced
        z_xs, z_xs2 = x.contrastive.projection, x.contrastive2.projection
        z_weak, z_s, z_s2 = u.weak.projection, u.strong.projection, u.strong2.projection
        centres = x.weak.centres  # (one per class: every view's output has them whole)

        adjust_u = (-logit_adjustment((1 - self.pool_share) * self.p_l + self.pool_share * self.p_all, 1.0)
                    + logit_adjustment(self.p_u, 1 + self.tau / 2))
        combined = (0.5 * (g_weak + adjust_u) + 0.5 * h_weak).detach() / self.temperature
        energy = -torch.logsumexp(combined, dim=1)
        q = torch.softmax(combined, dim=1)
        confidence, label = q.max(dim=1)
        mask = confidence >= self.threshold
        twice = mask.repeat(2)
        loss_x = F.cross_entropy(g_x, y)
        loss_x_b = F.cross_entropy(h_x + self.adjust_l, y)
        loss_u = (F.cross_entropy(torch.cat([g_s, g_s2]), label.repeat(2), reduction='none') * twice).mean()
        loss_u_b = (F.cross_entropy(torch.cat([h_s, h_s2]) + logit_adjustment(self.p_all, self.tau), label.repeat(2),
                                    reduction='none') * twice).mean()
        loss_cls = (self.unlabeled_weight * loss_u + loss_x) + (self.unlabeled_weight * loss_u_b + loss_x_b)

        one_hot = F.one_hot(y, C).to(z_weak.dtype).repeat(2, 1)
        labeled, labels = torch.cat([centres, z_xs, z_xs2]), torch.cat([self.centre_labels.to(z_weak.dtype), one_hot])
        loss_con = balanced_contrastive_loss(labeled, labels, z_weak, z_s, z_s2)
        selected = energy <= ENERGY_MAX
        continuous = sharpen(q) * selected[:, None]
        kept = torch.cat([torch.ones(C + 2 * B, dtype=torch.bool, device=z_weak.device), selected, selected])
        loss_soft = soft_contrastive_loss(torch.cat([labeled, z_s, z_s2]),
                                          torch.cat([labels, continuous, continuous]), kept, C)
        loss = self.lambda1 * loss_cls + self.lambda2 * loss_con + (1 - self.lambda1) * loss_soft

        self.count(q, mask, selected & ~self.is_labeled[u.index])
        terms = {'loss_x': loss_x + loss_x_b, 'loss_u': loss_u + loss_u_b, 'loss_cls': loss_cls,
                 'loss_con': loss_con, 'loss_soft': loss_soft, 'selected': selected.float().mean()}
        return StepResult(loss, terms, mask, label)

    @torch.no_grad()
    def count(self, q, confident, selected_unlabeled) -> None:
        """Add the step's pseudo labels to the counts (over the global batch); every --upbatch steps of
        an epoch past --est-epoch, update the estimates and restart the counts. Branch-free."""
        n_all, n_u = (q * confident[:, None]).sum(0), (q * selected_unlabeled[:, None]).sum(0)
        distributed.all_reduce_sum(n_all, n_u)
        self.n_all += n_all
        self.n_u += n_u
        self.batch += 1
        update = (self.batch % self.upbatch == 0) & (self.epoch > self.est_epoch)
        self.p_u.copy_(torch.where(update, self.alpha * self.p_u + (1 - self.alpha) * self.n_u / self.n_u.sum(),
                                   self.p_u))
        self.p_all.copy_(torch.where(update, self.beta * self.p_all + (1 - self.beta) * self.n_all / self.n_all.sum(),
                                     self.p_all))
        for n in (self.n_u, self.n_all):
            n.copy_(torch.where(update, torch.ones_like(n), n))

    def end_epoch(self) -> None:
        """A new epoch counts its steps and pseudo labels afresh (the official code's loop)."""
        self.epoch += 1
        self.batch.zero_()
        self.n_u.fill_(1)
        self.n_all.fill_(1)

    def unlabeled_prior(self) -> torch.Tensor:
        return self.p_u

    def metrics(self) -> dict:
        return {'p_all': self.p_all.tolist()}

    def eval_logits(self, output):
        return output.balanced  # the balanced head (the official code's reported top-1)
