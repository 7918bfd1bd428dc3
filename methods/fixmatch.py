"""FixMatch (Sohn et al., NeurIPS 2020), the first row of the paper's tables."""
import torch
import torch.nn.functional as F

from torch import nn

from methods.base import OPTIMIZER, THRESHOLD, Batch, Method, StepResult, adam
from methods.common import DASO_NETWORKS


class FixMatch(Method):
    """The baseline: hard pseudo labels argmax softmax(g(u_weak)) where max >= threshold, no logit
    adjustment and no prior estimate (Sohn et al., 2020)."""
    flags = (THRESHOLD, OPTIMIZER)
    networks = DASO_NETWORKS  # its CIFAR and STL-10 recipe is DASO's code's (sh/FixMatch.sh); so are DARP's, CReST+'s

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        self.threshold = args.threshold

    def make_optimizer(self, model: nn.Module, args) -> torch.optim.Optimizer:
        """The loop's SGD, or with --optimizer adam CoSSL's FixMatch Adam (methods.base.adam)."""
        return adam(model, args.lr) if args.optimizer == 'adam' else super().make_optimizer(model, args)

    def loss(self, views: Batch) -> StepResult:
        x, u = views.labeled, views.unlabeled
        confidence, pseudo_label = self.pseudo_distribution(u.weak.logits.detach()).max(dim=-1)
        mask = confidence >= self.threshold
        loss_x = F.cross_entropy(x.weak.logits, x.labels)
        loss_u = (F.cross_entropy(u.strong.logits, pseudo_label, reduction='none') * mask).mean()
        return StepResult(loss_x + loss_u, {'loss_x': loss_x, 'loss_u': loss_u}, mask, pseudo_label)

    def pseudo_distribution(self, u_weak: torch.Tensor) -> torch.Tensor:
        """The class distribution whose argmax and maximum are the pseudo label and its confidence."""
        return torch.softmax(u_weak, dim=-1)
