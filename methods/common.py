"""What several methods share: a labeled set grown with pool images, logit adjustment, the symmetric
KL (SimPro, ACR), the parameter groups of the weight decay and the networks of the MixMatch-lineage
codes."""
import dataclasses

import numpy as np
import torch

SMALL_IMAGES = ('cifar10', 'cifar100', 'stl10')
DASO_NETWORKS = dict.fromkeys(SMALL_IMAGES, 'wideresnet_daso')  # ytaek-oh/daso's WRN-28-2 (Method.networks)


def with_pool_images(data, pool_label: torch.Tensor):
    """`data` (a split) whose labeled set also holds the pool images of `pool_label` >= 0 (per pool
    position; -1: not added), in pool order, with those labels as targets; the pool keeps them too
    (CReST+'s generations, CPG's selected set)."""
    pool_label = pool_label.cpu().numpy()
    added = np.flatnonzero(pool_label >= 0)
    return dataclasses.replace(data, labeled_idx=np.concatenate([data.labeled_idx, data.unlabeled_idx[added]]),
                               labeled_targets=np.concatenate([data.labeled_targets, pool_label[added]]))


def logit_adjustment(prior: torch.Tensor, tau: float) -> torch.Tensor:
    """log(prior ** tau + 1e-12), added to (or subtracted from) logits."""
    return torch.log(prior ** tau + 1e-12)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """0.5 * KL(p || q) + 0.5 * KL(q || p) between two distributions (renormalised)."""
    p, q = (x.double().clamp_min(1e-12) for x in (p, q))
    p, q = p / p.sum(), q / q.sum()
    return float(0.5 * (p * (p / q).log()).sum() + 0.5 * (q * (q / p).log()).sum())


def param_groups(model: torch.nn.Module, weight_decay: float, on_all: bool = False):
    """Weight decay on every parameter except those whose name contains 'bias' or 'bn' (on all of
    them with `on_all`, as DASO's optimizer)."""
    no_decay = () if on_all else ('bias', 'bn')
    decay = [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)]
    rest = [p for n, p in model.named_parameters() if any(k in n for k in no_decay)]
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': rest, 'weight_decay': 0.0}]
