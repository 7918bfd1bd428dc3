"""FixMatch (Sohn et al., NeurIPS 2020), the first row of the paper's tables."""
import torch
import torch.nn.functional as F
from torch import nn


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
        confidence, pseudo_label = self.pseudo_distribution(u_weak.detach()).max(dim=-1)
        mask = confidence >= self.threshold
        loss_x = F.cross_entropy(logits[:B], y)
        loss_u = (F.cross_entropy(u_strong, pseudo_label, reduction='none') * mask).mean()
        return loss_x + loss_u, {'loss_x': loss_x, 'loss_u': loss_u}, mask, pseudo_label

    def pseudo_distribution(self, u_weak: torch.Tensor) -> torch.Tensor:
        """The class distribution whose argmax and maximum are the pseudo label and its confidence."""
        return torch.softmax(u_weak, dim=-1)

    def end_epoch(self) -> None:
        pass

    def unlabeled_prior(self):
        return None  # FixMatch does not estimate it

    @staticmethod
    def eval_logits(output):
        return output
