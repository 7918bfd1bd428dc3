"""CPG: Keep It on a Leash: Controllable Pseudo-label Generation Towards Realistic Long-Tailed
Semi-Supervised Learning (Hou, Han, Jia, Liu and Hou, NeurIPS 2025, arXiv:2510.03993), as its official
code trains it (YaxinHou/CPG, semilearn/imb_algorithms/cpg/cpg.py on USB).

The labeled set grows with pseudo-labelled pool images whose labels it controls, so that its class
distribution n_LS (labeled counts n_L plus selected counts n_S) stays known:
- warm-up (the first --cpg-warmup-epochs epochs): the main head learns the labeled images with label
  smoothing and log pi(n_L) added to its logits; an auxiliary head (the balanced head here) learns the
  same, plus FixMatch on every unlabeled row with its own argmax pseudo labels (smoothed, no threshold);
- then, every step, each unlabeled image whose weak and strong views the main head (adjusted by the
  selected set's refined prior) labels alike with confidence >= --threshold (1 - smoothing) is
  remembered with its label; every --cpg-update-epochs epochs the images remembered more than
  --cpg-min-hits times with one label in more than --cpg-agreement of them form the selected set (it
  replaces the last one), trained on with their label histogram as the target, and the memory starts
  again. The labeled set is the original one plus the selected images; the main head learns it with
  log pi(n_LS) added and noisy copies of the rarer classes' features (class-aware augmentation: a row
  of class k gets int(--cpg-copies n_LS[C // 3 in ascending order] / n_LS[k]) copies, f + eps r_k f/|f|,
  eps ~ N(0, I), r from each class's feature similarity to its centre); the auxiliary head learns the
  unlabeled rows with hard pseudo labels and the labeled rows' hard labels, logit-adjusted by n_LS.
The main head's plain logits are evaluated; the auxiliary head is not.
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dataset.device_batches import RowViews
from methods.base import THRESHOLD, Batch, Flag, Method, StepResult, finite
from methods.common import SMALL_IMAGES, with_pool_images
from utils import distributed

FEATURE_BATCH = 64  # the batch of its feature passes over the labeled set (its adaptive_feature_loader)
FLAGS = (
    THRESHOLD,
    Flag('--label-smoothing', dict(type=float, default=0.1,
                                   help="label smoothing of the labeled targets; the selection's threshold is "
                                        "--threshold times (1 - it)"),
         'a number in [0, 1)', lambda v: finite(v) and 0 <= v < 1),
    Flag('--cpg-warmup-epochs', dict(type=int, default=30, help='epochs of warm-up before the selection starts'),
         'an integer >= 0', lambda v: v >= 0),
    Flag('--cpg-update-epochs', dict(type=int, default=5,
                                     help='epochs of each window of remembered pseudo labels: the selected set is '
                                          'made again at its end'),
         'an integer >= 1', lambda v: v >= 1),
    Flag('--cpg-min-hits', dict(type=int, default=12,
                                help='an image is selected when remembered more than this many times in a window'),
         'an integer >= 0', lambda v: v >= 0),
    Flag('--cpg-agreement', dict(type=float, default=0.8,
                                 help='... and with one label in more than this share of them'),
         'a number in [0, 1]', lambda v: finite(v) and 0 <= v <= 1),
    Flag('--cpg-copies', dict(type=int, default=10,
                              help='noisy feature copies of a row of the class at position C // 3 of the ascending '
                                   'n_LS (and of every row in the first window)'),
         'an integer >= 0', lambda v: v >= 0),
    Flag('--cpg-exact-similarity', dict(action=argparse.BooleanOptionalAction, default=False,
                                        help="each class's mean similarity to its centre over all its rows (off: "
                                             "as its code, one row per class and feature batch counts)")))


def smooth(labels: torch.Tensor, num_classes: int, smoothing) -> torch.Tensor:
    """One-hot targets with 1 - smoothing on the label and smoothing / (C - 1) elsewhere."""
    one_hot = F.one_hot(labels, num_classes).to(torch.float32)
    return one_hot * (1 - smoothing) + (1 - one_hot) * (smoothing / (num_classes - 1))


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-sum_c target_c log softmax(logits)_c per row (over the last dimension)."""
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1)


def copies_per_class(n_ls: torch.Tensor, copies: int) -> torch.Tensor:
    """int(copies * sort(n_LS)[C // 3] / n_LS) in float32, as its code: the rarer a class of the labeled
    set, the more noisy copies of each of its rows."""
    n_ls = n_ls.to(torch.float32)
    return (copies * torch.sort(n_ls).values[len(n_ls) // 3] / n_ls).to(torch.long)


def refined_prior(n_s: torch.Tensor, n_l: torch.Tensor) -> torch.Tensor:
    """The selected set's distribution that adjusts the selection's pseudo labels: its counts at or
    below the smallest labeled count set to the smallest count above 0 that is left (uniform when
    none is left)."""
    kept = torch.where(n_s <= n_l.min(), torch.zeros_like(n_s), n_s)
    values = torch.unique(kept)  # (sorted)
    refined = torch.ones_like(kept) if len(values) == 1 else torch.where(kept == 0, values[1], kept)
    return refined / refined.sum()


def select(memory: torch.Tensor, min_hits: int, agreement: float):
    """From the window's memory (pool image x class: the times it was remembered with that label): the
    label of each image that is selected (-1: not), remembered more than `min_hits` times and with one
    label in more than `agreement` of them, and every image's label histogram (its soft target)."""
    hits = memory.sum(1)
    top, label = memory.max(1)
    keep = (hits > min_hits) & (top.double() > agreement * hits.double())
    return torch.where(keep, label, -1), memory.float() / hits.clamp(min=1)[:, None].float()


def similarity_sums(features: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor, exact: bool,
                    batch: int = FEATURE_BATCH) -> torch.Tensor:
    """Per class, the sum of (cos(f, centre of its class) + 1) / 2 over the rows: all of them with
    `exact`, else as its code's `sim_num[y] += s`, whose duplicate indices keep one row of a class per
    batch of `batch` rows (the batch's last, as on the CPU)."""
    s = (F.cosine_similarity(features, centres[labels], dim=1, eps=0) + 1) / 2
    sums = torch.zeros(len(centres), dtype=s.dtype, device=s.device)
    if exact:
        return sums.index_add_(0, labels, s)
    for start in range(0, len(labels), batch):
        y, part = labels[start:start + batch], s[start:start + batch]
        last = torch.full((len(centres),), -1, dtype=torch.long, device=s.device)
        last.scatter_reduce_(0, y, torch.arange(len(y), device=s.device), 'amax')
        present = last >= 0
        sums[present] += part[last[present]]
    return sums


class CPG(Method):
    """The main head is NetworkOutput.logits, the auxiliary head .balanced."""
    flags = FLAGS
    labeled_views = {'weak': 'weak', 'strong': 'strong'}  # (the strong one only in BatchNorm's statistics, as its
    # one forward of every view)
    unlabeled_views = {'weak': 'weak', 'strong': 'strong'}
    two_heads = True
    with_features = True
    stages_change_labeled_set = True
    networks = dict.fromkeys(SMALL_IMAGES, 'wideresnet_usb')  # (its bi_rot_wrn_28_2 without the unused rotation head)

    @classmethod
    def idle_parts(cls, args, steps: int) -> list:
        epochs, warmup = steps // args.eval_step, args.cpg_warmup_epochs
        if epochs <= warmup:
            return [f'the run ends within the warm-up of --cpg-warmup-epochs {warmup} epochs: no pseudo label is '
                    f'remembered and the labeled set never grows']
        if epochs <= warmup + args.cpg_update_epochs:
            return [f'the run ends before the first window of --cpg-update-epochs {args.cpg_update_epochs} epochs '
                    f'closes: the labeled set never grows']
        return []

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        counts = torch.as_tensor(data.labeled_per_class, dtype=torch.float32)
        self.num_classes, self.seed = len(counts), args.seed
        self.smoothing, self.threshold = args.label_smoothing, args.threshold * (1 - args.label_smoothing)
        self.min_hits, self.agreement, self.copies_at_reference = args.cpg_min_hits, args.cpg_agreement, args.cpg_copies
        self.exact_similarity = args.cpg_exact_similarity
        first, every = args.cpg_warmup_epochs * args.eval_step, args.cpg_update_epochs * args.eval_step
        self.stage_starts = tuple(range(first, args.total_steps, every))
        self.original_labeled = len(data.labeled_idx)
        self.row_views = RowViews(data.images, data.mean, data.std, data.flip, data.cutout)  # (the loop's weak view)
        pool = len(data.unlabeled_idx)
        self.register_buffer('n_l', counts)
        self.register_buffer('n_ls', counts.clone())  # the labeled set's class counts: n_L + n_S
        self.register_buffer('stage', torch.zeros((), dtype=torch.long))  # windows started (0: warm-up)
        self.register_buffer('selecting', torch.zeros((), dtype=torch.int32))  # 1 after the warm-up
        self.register_buffer('aux_smoothing', torch.tensor(float(args.label_smoothing)))  # 0 after the warm-up
        self.register_buffer('selection_prior', torch.zeros(self.num_classes))  # log of the refined prior
        self.register_buffer('copies', torch.zeros(self.num_classes, dtype=torch.long))  # per class of a row
        self.register_buffer('radius', torch.zeros(self.num_classes))  # r of the copies' noise, per class
        self.register_buffer('memory', torch.zeros(pool, self.num_classes, dtype=torch.int32))  # this window's
        self.register_buffer('pool_label', torch.full((pool,), -1, dtype=torch.long))  # of the selected set
        targets = torch.zeros(self.original_labeled + pool, self.num_classes)  # per position of the labeled set
        targets[:self.original_labeled] = smooth(torch.as_tensor(data.labeled_targets), self.num_classes,
                                                 args.label_smoothing)
        self.register_buffer('targets', targets)
        self.max_copies = 0  # (copies.max() on the host, for the shape of the step's copies)

    def loss(self, views: Batch) -> StepResult:
        x, u = views.labeled, views.unlabeled
        adjust = torch.log(self.n_ls / self.n_ls.sum())
        target = self.targets[x.index]
        supervised = self.supervised_loss(x.weak, x.labels, target, adjust)
        with torch.no_grad():  # the selection's pseudo labels: the main head's, by the refined prior
            p_weak = torch.softmax(u.weak.logits.detach() + self.selection_prior, -1)
            p_strong = torch.softmax(u.strong.logits.detach() + self.selection_prior, -1)
            confidence, pseudo_label = p_weak.max(-1)
            confidence_strong, pseudo_label_strong = p_strong.max(-1)
            mask = (confidence >= self.threshold) & (confidence_strong >= self.threshold) & \
                (pseudo_label == pseudo_label_strong) & (self.selecting > 0)
            self.remember(u.index, pseudo_label, mask)
        aux_label = u.weak.balanced.detach().argmax(-1)
        aux_u = soft_cross_entropy(u.strong.balanced, smooth(aux_label, self.num_classes, self.aux_smoothing)).mean()
        aux_x = soft_cross_entropy(x.weak.balanced + adjust, smooth(x.labels, self.num_classes,
                                                                    self.aux_smoothing)).mean()
        loss = supervised + aux_u + aux_x
        return StepResult(loss, {'loss_x': supervised, 'loss_aux_u': aux_u, 'loss_aux_x': aux_x}, mask, pseudo_label)

    def supervised_loss(self, weak, labels: torch.Tensor, target: torch.Tensor, adjust: torch.Tensor):
        """The main head's logit-adjusted soft cross-entropy, mean over the labeled rows and their
        noisy feature copies: copies[label] of each row (up to max_copies), f + eps r_label f / |f|."""
        logits = weak.logits + adjust
        rows = soft_cross_entropy(logits, target)
        if self.max_copies == 0:
            return rows.mean()
        features = weak.features
        noise = torch.randn(len(labels), self.max_copies, features.shape[1], device=features.device,
                            dtype=features.dtype)
        noise = noise * self.radius[labels][:, None, None] * F.normalize(features, dim=1)[:, None, :]
        copy_logits = logits[:, None, :] + noise @ weak.classifier.t()  # (the head is linear: W (f + d) = W f + W d)
        counted = (torch.arange(self.max_copies, device=labels.device) < self.copies[labels][:, None]).to(rows.dtype)
        copies = soft_cross_entropy(copy_logits, target[:, None, :]) * counted
        return (rows.sum() + copies.sum()) / (len(rows) + counted.sum())

    def remember(self, index: torch.Tensor, label: torch.Tensor, mask: torch.Tensor) -> None:
        """Count each masked row's pseudo label for its pool image (the rows of every process)."""
        index, label, mask = distributed.all_gather_cat(torch.stack([index, label, mask.long()], 1)).unbind(1)
        self.memory.index_put_((index, label), mask.to(torch.int32), accumulate=True)

    @torch.no_grad()
    def start_stage(self, ema_network: nn.Module, data, device, network: nn.Module) -> str:
        """The warm-up ends (the first window opens), or a window closes: the selected set is made of
        its memory, which starts again. Either way the noise radii are measured again on the new
        labeled set with the network being trained."""
        if int(self.stage) == 0:
            self.selecting.fill_(1)
            self.aux_smoothing.zero_()
            self.copies.fill_(self.copies_at_reference)
            line = (f'CPG warm-up over: confident pseudo labels are remembered from now on; '
                    f'{self.copies_at_reference} noisy feature copies of every labeled row')
        else:
            label, histogram = select(self.memory, self.min_hits, self.agreement)
            self.pool_label.copy_(label)
            kept = label >= 0
            selected = int(kept.sum())
            self.targets[self.original_labeled:] = 0
            self.targets[self.original_labeled:self.original_labeled + selected] = histogram[kept]
            n_s = torch.bincount(label[kept], minlength=self.num_classes).float()
            self.n_ls.copy_(self.n_l + n_s)
            self.selection_prior.copy_(torch.log(refined_prior(n_s, self.n_l)))
            self.copies.copy_(copies_per_class(self.n_ls, self.copies_at_reference))
            self.memory.zero_()
            line = (f'CPG window {int(self.stage)} closed: {selected} pool images selected into the labeled set (per '
                    f'class {n_s.long().tolist()}); copies per class {self.copies.tolist()}')
        self.radius.copy_(self.measure_radius(network, self.training_data(data), device))
        self.stage += 1
        self.max_copies = int(self.copies.max())
        return line

    def measure_radius(self, network: nn.Module, labeled, device) -> torch.Tensor:
        """r: per class, n_LS over the similarity sum of its rows' features to its centre (the class
        mean), normalised to sum 1, from two passes of the network in training mode (its BatchNorm
        statistics move, as its code's) over weak views of the labeled set, in its order."""
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, 5, int(self.stage)])
                                                      .generate_state(1)[0]))
        labels = torch.as_tensor(labeled.labeled_targets, device=device)
        was_training = network.training
        network.train()
        passes = []
        for _ in range(2):
            passes.append(torch.cat([network(self.row_views(labeled.labeled_idx[start:start + FEATURE_BATCH], 'weak',
                                                            generator, device), with_features=True).features.float()
                                     for start in range(0, len(labels), FEATURE_BATCH)]))
        network.train(was_training)
        sums = torch.zeros(self.num_classes, passes[0].shape[1], device=device).index_add_(0, labels, passes[0])
        centres = sums / self.n_ls[:, None]
        similarity = similarity_sums(passes[1], labels, centres, self.exact_similarity)
        inverse = torch.where(similarity > 0, self.n_ls / similarity, torch.zeros_like(similarity))
        return inverse / inverse.sum()

    def training_data(self, data):
        """The original labeled set, then the selected pool images (in pool order) with their labels."""
        return with_pool_images(data, self.pool_label)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict, assign)
        self.max_copies = int(self.copies.max())
        return result

    def metrics(self) -> dict:
        """The labeled set's class counts n_LS (the original n_L plus the selected set's)."""
        return {'n_ls': self.n_ls.long().tolist()}
