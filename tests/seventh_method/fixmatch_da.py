"""A seventh method, written as a contributor would add one (README, "Add a method"), to show that a
method is one file on the contract of methods/base.py: FixMatch whose pseudo labels come from
distribution-aligned predictions (ReMixMatch's alignment towards the labeled distribution):
p~ = normalise(p * p_l / p_model), with p_model a running mean of the predictions on the
unlabeled batches. tests/test_new_method.py registers it with one line and uses it."""
import torch

from methods.base import Flag, finite
from methods.fixmatch import FixMatch
from utils import distributed

DA_MOMENTUM = Flag('--da-momentum', dict(type=float, default=0.999,
                                         help='momentum of the running mean of the predictions p_model'),
                   'a number in [0, 1)', lambda v: finite(v) and 0 <= v < 1)


class FixMatchDA(FixMatch):
    """FixMatch with its pseudo labels from p * p_l / p_model, renormalised."""
    flags = FixMatch.flags + (DA_MOMENTUM,)
    launcher = 'tests/seventh_method/FixMatchDA.sh'  # (a method of the project would use sh/<name>.sh)

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        counts = torch.as_tensor(data.labeled_per_class, dtype=torch.float32)
        self.momentum = args.da_momentum
        self.register_buffer('p_l', counts / counts.sum())
        self.register_buffer('p_model', torch.full_like(counts, 1 / len(counts)))

    @torch.no_grad()
    def pseudo_distribution(self, u_weak: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(u_weak, dim=-1)
        batch_mean = p.mean(0)
        distributed.all_reduce_sum(batch_mean)  # the global batch: every process holds the same p_model
        self.p_model.mul_(self.momentum).add_((1 - self.momentum) * batch_mean / distributed.world_size())
        aligned = p * self.p_l / self.p_model
        return aligned / aligned.sum(dim=1, keepdim=True)

    def unlabeled_prior(self) -> torch.Tensor:
        return self.p_model / self.p_model.sum()
