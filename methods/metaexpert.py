"""Meta-Expert: A Square Peg in a Square Hole: Meta-Expert for Long-Tailed Semi-Supervised Learning (Hou
and Jia, ICML 2025), as its official code trains it (YaxinHou/Meta-Expert,
semilearn/imb_algorithms/metaexpert/metaexpert.py, on USB and CPE).

CPE's three experts on its classwise BatchNorm branches (methods/cpe.py, every loss of it), plus a
gate (the "meta expert"): an MLP over the network's pooled features of every depth (its multi-depth
feature fusion) and the experts' logit-adjusted predictions gives three scores o; with a = softmax(o)
and p_k expert k's largest probability among its own classes (head, medium, tail), the experts'
weights are w = softmax(p_k a_k). From epoch --est-epoch + 2 on four more losses train the network:
- the weighted sum of the experts' min-shifted adjusted logits on the labeled images (class-balanced CE);
- the gate's scores on the labeled images against their class's group (class-balanced CE);
- the gate's scores on the strong view against its weak view's argmax;
- per expert, its three branches mixed by w on the strong view against the weak view's argmax, weighted
  by kappa, the one-hot of the unlabeled distribution (consistent, uniform, reversed) read once, at
  that epoch's start, from the second expert's confident pseudo labels of the epoch before.
The gate is built after the network, as its code's, and like there never trained: its code builds the
optimizer before adding it. The evaluation reads sum_k w_k times expert k's mean over the branches.
"""
import torch
import torch.nn.functional as F
from torch import nn

from methods.base import EST_EPOCH, Batch, Flag, StepResult, finite
from methods.cpe import CPE, FLAGS as CPE_FLAGS
from utils import distributed

FLAGS = (
    *CPE_FLAGS, EST_EPOCH,
    Flag('--me-beta', dict(type=float, default=0.99, help='beta of the class-balanced weights (effective numbers) of '
                                                          'its fused and gate losses'),
         'a number in [0, 1)', lambda v: finite(v) and 0 <= v < 1),
    Flag('--me-ratio', dict(type=float, default=2.0, help='the ratio that tells the unlabeled distribution apart '
                                                          '(uniform: max / min below it; reversed: ...)'),
         'a finite number > 1', lambda v: finite(v) and v > 1))


class Gate(nn.Module):
    """The gate of MetaExpertNet: its multi-depth feature fusion (two chains of Linear + SiLU over the
    pooled features of the stem and each group) and `predict` (Linear-SiLU three times, to three scores),
    at PyTorch's initialisation. `widths`: the four depths' channels (16, 32, 64, 128 for WRN-28-2)."""

    def __init__(self, widths, num_classes: int):
        super().__init__()
        g = (widths[1], widths[2], widths[3], 2 * widths[3])
        h = (2 * widths[1], 2 * widths[2], 2 * widths[3], 2 * widths[3])
        self.widths = tuple(widths)
        self.first = nn.ModuleList(nn.Linear(a, b) for a, b in zip((widths[0], *g[:3]), g))
        self.second = nn.ModuleList(nn.Linear(a, b) for a, b in zip((g[0], *h[:3]), h))
        self.predict = nn.Sequential(nn.Linear(h[3] + 3 * num_classes, 128), nn.SiLU(), nn.Linear(128, 64), nn.SiLU(),
                                     nn.Linear(64, 3), nn.SiLU())

    def forward(self, depths: torch.Tensor, adjusted: torch.Tensor) -> torch.Tensor:
        """The scores o (rows, 3) of the pooled features `depths` (rows, sum of widths) and the experts'
        adjusted logits `adjusted` (rows, 3, classes)."""
        features, g, h = depths.split(self.widths, 1), [], []
        for i, layer in enumerate(self.first):
            g.append(F.silu(layer(features[i] + (g[-1] if g else 0))))
        for i, layer in enumerate(self.second):
            h.append(F.silu(layer(g[i] + (h[-1] if h else 0))))
        return self.predict(torch.cat([h[-1], torch.softmax(adjusted, -1).flatten(1)], 1))


def effective_number_weights(counts: torch.Tensor, beta: float) -> torch.Tensor:
    """(1 - beta) / (1 - beta ** n) per entry, scaled to sum to the number of entries."""
    weights = (1 - beta) / (1 - beta ** counts)
    return weights / weights.sum() * len(counts)


def shift(logits: torch.Tensor) -> torch.Tensor:
    """The logits minus their row's minimum (>= 0), as its fusion."""
    return logits - logits.amin(-1, keepdim=True)


class MetaExpert(CPE):
    flags = FLAGS
    depth_features = True
    defaults = {'est_epoch': 18}  # (its configs')

    @classmethod
    def idle_parts(cls, args, steps: int) -> list:
        start = (args.est_epoch + 2) * args.eval_step
        return [] if steps > start else [f'the gate and fusion losses never start (from step (--est-epoch + 2) x '
                                         f'--eval-step = {start}; the run has {steps})']

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        counts = torch.as_tensor(data.labeled_per_class, dtype=torch.float32)
        classes, width = len(counts), num_features or 128
        self.gate = Gate((16, width // 4, width // 2, width), classes)
        self.gate.requires_grad_(False)  # (never trained, as its code; its inputs still get the gradients)
        self.ratio = args.me_ratio
        group = torch.bucketize(torch.arange(classes), torch.tensor([self.cut1, self.cut2]), right=True)
        self.register_buffer('group', group)  # 0 head, 1 medium, 2 tail
        self.register_buffer('class_weights', effective_number_weights(counts, args.me_beta))
        group_counts = torch.zeros(3).index_add_(0, group, counts)
        self.register_buffer('group_weights', effective_number_weights(group_counts, args.me_beta))
        self.est_epoch = args.est_epoch
        self.register_buffer('epoch', torch.zeros((), dtype=torch.long))
        self.register_buffer('count', torch.zeros(classes))    # the second expert's confident pseudo labels
        self.register_buffer('kappa', torch.full((3,), 1 / 3))  # consistent, uniform, reversed
        self.register_buffer('pi_hat', torch.zeros(classes))
        self.register_buffer('fusing', torch.zeros(()))        # 1 from epoch est_epoch + 2 on

    def weights(self, output):
        """(o, w) of rows' output: the gate's scores and the experts' weights."""
        mean = output.experts.mean(2)  # (rows, experts, classes)
        scores = self.gate(output.depths, mean + self.adjust)
        probs = torch.softmax(mean, -1)
        in_range = torch.stack([self.group == k for k in range(3)])  # (experts, classes)
        own = torch.where(in_range, probs, torch.zeros_like(probs)).amax(-1)  # p_k: expert k's best own class
        return scores, torch.softmax(own * torch.softmax(scores, -1), -1)

    def loss(self, views: Batch) -> StepResult:
        total, terms, mask, pseudo_label = self.expert_losses(views)
        x, u = views.labeled, views.unlabeled
        with torch.no_grad():  # (its second expert's confident pseudo labels of epoch est_epoch + 1)
            collecting = (self.epoch == self.est_epoch + 1).to(self.count.dtype)
            self.count.index_add_(0, pseudo_label, mask.to(self.count.dtype) * collecting)
        (o_x, w_x), (o_s, w_s) = self.weights(x.weak), self.weights(u.strong)
        with torch.no_grad():  # (the weak view gives targets only: the gate's, and each expert's branches mixed by w)
            o_w, w_w = self.weights(u.weak)
            targets = (w_w[:, None, :, None] * shift(u.weak.experts)).sum(2).argmax(-1)  # (rows, experts)
        fused_x = (w_x[..., None] * shift(x.weak.experts.mean(2) + self.adjust)).sum(1)
        fuse_sup = F.cross_entropy(fused_x, x.labels, weight=self.class_weights)
        gate_sup = F.cross_entropy(o_x, self.group[x.labels], weight=self.group_weights)
        gate_unsup = F.cross_entropy(o_s, o_w.argmax(-1))
        mixed_s = (w_s[:, None, :, None] * shift(u.strong.experts)).sum(2)  # (rows, experts, classes)
        fuse_unsup = sum(self.kappa[k] * F.cross_entropy(mixed_s[:, k], targets[:, k]) for k in range(3))
        fusion = fuse_sup + gate_sup + fuse_unsup + gate_unsup
        terms.update(fuse_sup=fuse_sup, gate_sup=gate_sup, fuse_unsup=fuse_unsup, gate_unsup=gate_unsup)
        return StepResult(total + self.fusing * fusion, terms, mask, pseudo_label)

    def end_epoch(self) -> None:
        self.epoch += 1
        if int(self.epoch) == self.est_epoch + 2:  # (the start of its epoch est_epoch + 2: once)
            distributed.all_reduce_sum(self.count)
            if float(self.count.sum()) > 0:
                self.pi_hat.copy_(self.count / self.count.sum())
                self.kappa.copy_(self.distribution(self.pi_hat))
        self.fusing.fill_(float(int(self.epoch) >= self.est_epoch + 2))

    def distribution(self, pi_hat: torch.Tensor) -> torch.Tensor:
        """kappa: one-hot of consistent, uniform, reversed, by its test of the estimate's halves (--me-ratio)."""
        half, ratio = len(pi_hat) // 2, self.ratio
        first, second = pi_hat[:half], pi_hat[half:]
        reversed_ = bool(second.max() / first.min() > ratio) and bool(first.max() / second.min() < ratio)
        uniform = bool(pi_hat.max() / pi_hat.min() < ratio)
        consistent = not (uniform + reversed_ == 1)
        return torch.tensor([float(consistent), float(uniform), float(reversed_)], device=pi_hat.device)

    def eval_logits(self, output):
        """sum_k w_k times expert k's mean over the branches (unadjusted)."""
        return (self.weights(output)[1][..., None] * output.experts.mean(2)).sum(1)

    def metrics(self) -> dict:
        """kappa, and the one-off reading of the unlabeled distribution it came from (logged as `pi_hat`,
        not as the run's estimate `pi_u`: the method keeps none)."""
        return {'kappa': self.kappa.tolist(), 'pi_hat': self.pi_hat.tolist()}
