"""BaCon: Boosting Imbalanced Semi-supervised Learning via Balanced Feature-Level Contrastive Learning
(Feng, Xie, Fang and Lin, AAAI 2024), as its authors' code trains it (fqhank/AAAI24-BaCon-CISSL,
semilearn/imb_algorithms/bacon/bacon.py on USB, its FixMatch variant).

FixMatch on the main head, and ABC's auxiliary balanced classifier (the balanced head here, which is
evaluated) on the same features: its labeled loss keeps a row of class y with probability
min(n) / n_y, its unlabeled loss (its own confident pseudo labels on the strong view) keeps a row of
pseudo class k with probability 1 - t (1 - min(n) / n_k), t the share of training done. On top, a
contrastive loss on a linear projection of the features (32-d), from the step after --contrast-after:
each labeled row and each weak unlabeled row (its class: the label, or the auxiliary head's top
prediction) is pulled to its class centre, at a temperature that is lower for the classes with more
selected images, against the rows that are not of its class (a labeled row of another class, an
unlabeled row whose auxiliary top 3 leave the class out), counted only for the rows the auxiliary head
predicts with confidence >= 0.98. The centres are the means of a bank holding the latest projection of
every labeled and pool image so predicted, over the images selected as each class (labeled images by
their label, pool images whose auxiliary logit reached 0.95).
"""
import torch
import torch.nn.functional as F

from methods.base import THRESHOLD, Batch, Flag, Method, StepResult, finite
from methods.common import SMALL_IMAGES
from utils import distributed

PROJECTION = 32        # the projection's width (Projection_dim)
SELECT_LOGIT = 0.95    # a pool image's class is counted once its auxiliary LOGIT (not probability) reaches this
BANK_CONFIDENCE = 0.98  # rows whose auxiliary probability reaches this enter the bank and the contrastive loss
TEMPERATURE = 0.1      # of the negatives, and of the positives before the class adjustment
ADJUST = 0.0005        # the positives' temperature: 0.1 - (1 - it / T)^2 ADJUST sqrt(freq / max freq)
NEGATIVES = 64         # the weight of the negatives' mean in the denominator
FLAGS = (
    THRESHOLD,
    Flag('--abc-threshold', dict(type=float, default=0.95,
                                 help="confidence threshold of the auxiliary head's pseudo labels (abc_p_cutoff)"),
         'a number in [0, 1]', lambda v: finite(v) and 0 <= v <= 1),
    Flag('--abc-loss-ratio', dict(type=float, default=1.0, help="weight of the auxiliary head's loss"),
         'a finite number >= 0', lambda v: finite(v) and v >= 0),
    Flag('--contrast-after', dict(type=int, default=100000,
                                  help='the contrastive loss acts from the step after this many steps (its code: '
                                       'it > 100000)'),
         'an integer >= 0', lambda v: v >= 0))


def abc_masks(keep_labeled: torch.Tensor, keep_unlabeled: torch.Tensor) -> tuple:
    """Bernoulli draws of the rows each loss keeps, from their keep probabilities."""
    return torch.bernoulli(keep_labeled), torch.bernoulli(keep_unlabeled)


def contrastive_loss(features, classes, top3_unlabeled, labels, centres, temperatures, select):
    """Its contrastive loss over the rows `features` (labeled, then weak unlabeled) of `classes`: per
    class i, each of its rows' exp(cos(f, centre_i) / t_i) against NEGATIVES times the mean over (its
    rows x the class's negatives) of exp(cos / TEMPERATURE), -log of their ratio summed over the
    selected rows, over the number selected. The negatives of class i are the labeled rows of another
    label and the unlabeled rows whose auxiliary top 3 do not hold i."""
    num_classes = len(centres)
    classes_range = torch.arange(num_classes, device=features.device)
    negative = torch.cat([labels[None, :] != classes_range[:, None],
                          (top3_unlabeled[None, :, :] != classes_range[:, None, None]).all(-1)], 1)  # (C, rows)
    similarity = torch.exp(F.cosine_similarity(features[:, None, :], features[None, :, :], dim=-1) / TEMPERATURE)
    members = F.one_hot(classes, num_classes).to(features.dtype)  # (rows, C)
    negative = negative.to(features.dtype)
    # per class: the sum over its rows and its negatives, over (its rows x its negatives)
    block = torch.einsum('rc,rs,cs->c', members, similarity, negative)
    negative_mean = block / (members.sum(0) * negative.sum(1)).clamp(min=1)  # (a class without rows: no term)
    positive = torch.exp(F.cosine_similarity(features, centres[classes], dim=-1) / temperatures[classes])
    ratio = positive / (positive + NEGATIVES * negative_mean[classes] + 1e-8)
    return (-torch.log(ratio) * select).sum() / (select.sum() + 1e-8)


class BaCon(Method):
    """The main head is NetworkOutput.logits, ABC's auxiliary head .balanced, the projection .projection."""
    flags = FLAGS
    two_heads = True
    contrast_dim = PROJECTION
    networks = dict.fromkeys(SMALL_IMAGES, 'wideresnet_usb')  # (its wrn_28_2, with ABCNet's head and projection)

    @classmethod
    def idle_parts(cls, args, steps: int) -> list:
        if args.contrast_after + 1 >= steps:
            return [f'the contrastive loss never acts: it starts after step --contrast-after {args.contrast_after}']
        return []

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        counts = torch.as_tensor(data.labeled_per_class, dtype=torch.float64)
        self.threshold, self.abc_threshold, self.abc_ratio = args.threshold, args.abc_threshold, args.abc_loss_ratio
        self.total_steps, self.epoch_steps = args.total_steps, args.eval_step
        self.stage_starts = (args.contrast_after + 1,)  # (its `self.it > 100000`: it counts the steps done)
        self.labeled_size = len(data.labeled_idx)
        self.register_buffer('keep', (counts.min() / counts).float())  # ABC's keep probability of a labeled row
        self.register_buffer('step', torch.zeros((), dtype=torch.long))  # the steps done
        self.register_buffer('contrasting', torch.zeros((), dtype=torch.bool))
        size = self.labeled_size + len(data.unlabeled_idx)  # the labeled images, then the pool's
        self.register_buffer('selected', torch.full((size,), -1, dtype=torch.long))  # each image's class, -1: none
        self.register_buffer('bank', torch.ones(size, PROJECTION))  # the latest confident projection of each
        self.register_buffer('centres', torch.ones(len(counts), PROJECTION))
        self.contrasting_now = False  # (contrasting on the host: whether the step's forward computes the projection)

    def forward_options(self) -> dict:
        """The projection of every step (the bank's), with a gradient once the contrastive loss acts."""
        return {'with_features': False, 'projection': 'trained' if self.contrasting_now else 'detached'}

    def loss(self, views: Batch) -> StepResult:
        x, u = views.labeled, views.unlabeled
        supervised = F.cross_entropy(x.weak.logits, x.labels)
        probabilities = torch.softmax(u.weak.logits.detach(), -1)
        confidence, pseudo_label = probabilities.max(-1)
        mask = confidence >= self.threshold
        unsupervised = (F.cross_entropy(u.strong.logits, pseudo_label, reduction='none') * mask).mean()
        aux_weak = u.weak.balanced.detach()
        self.count_classes(x.index, x.labels, u.index, aux_weak)
        abc = self.abc_loss(x.weak.balanced, x.labels, aux_weak, u.strong.balanced)
        loss = supervised + unsupervised + self.abc_ratio * abc
        terms = {'loss_x': supervised, 'loss_u': unsupervised, 'loss_abc': abc, 'loss_contrast': torch.zeros_like(abc)}
        confident = torch.cat([torch.softmax(x.weak.balanced.detach(), -1).max(-1).values,
                               torch.softmax(aux_weak, -1).max(-1).values]) >= BANK_CONFIDENCE
        projection = torch.cat([x.weak.projection, u.weak.projection])
        if self.contrasting_now:  # (at the centres of the last step)
            terms['loss_contrast'] = self.contrast(projection, x.labels, aux_weak, confident)
            loss = loss + terms['loss_contrast']
        self.update_bank(torch.cat([x.index, self.labeled_size + u.index]), projection.detach(), confident)
        self.step += 1
        return StepResult(loss, terms, mask, pseudo_label)

    @torch.no_grad()
    def count_classes(self, x_index, labels, u_index, aux_weak) -> None:
        """A pool image whose largest auxiliary logit reaches SELECT_LOGIT is selected as that class; when
        any is, the batch's labeled images are selected as their labels (its code's order: the counts read
        by the temperatures include this step's)."""
        x_index, labels, u_index, aux_weak = (distributed.all_gather_cat(t) for t in (x_index, labels, u_index,
                                                                                        aux_weak))
        top, label = aux_weak.max(-1)
        chosen = top >= SELECT_LOGIT
        pool_rows = self.labeled_size + u_index
        self.selected.index_copy_(0, pool_rows, torch.where(chosen, label, self.selected[pool_rows]))
        self.selected.index_copy_(0, x_index, torch.where(chosen.any(), labels, self.selected[x_index]))

    def abc_loss(self, labeled, labels, aux_weak, aux_strong):
        """ABC: the labeled CE kept with probability min(n) / n_y; the unlabeled CE of the auxiliary head's
        pseudo labels above --abc-threshold kept with probability 1 - t (1 - min(n) / n_k), t = epoch / epochs."""
        probabilities = torch.softmax(aux_weak, -1)
        confidence, pseudo_label = probabilities.max(-1)
        done = (self.step // self.epoch_steps).float() / (self.total_steps // self.epoch_steps)
        keep_labeled, keep_unlabeled = abc_masks(self.keep[labels], 1 - done * (1 - self.keep[pseudo_label]))
        labeled_loss = (F.cross_entropy(labeled, labels, reduction='none') * keep_labeled).mean()
        mask = (confidence >= self.abc_threshold).to(aux_strong.dtype) * keep_unlabeled
        return labeled_loss + (F.cross_entropy(aux_strong, pseudo_label, reduction='none') * mask).mean()

    def contrast(self, projection, labels, aux_weak, confident):
        """The contrastive loss of the labeled and weak unlabeled rows' projections (classes: the labels, and
        the auxiliary head's top predictions), at temperatures from the selected images' class counts."""
        top3 = aux_weak.topk(3, dim=-1).indices
        frequency = (self.selected[:, None] == torch.arange(len(self.centres), device=labels.device)).sum(0).float()
        temperatures = TEMPERATURE - (1 - self.step.float() / self.total_steps) ** 2 * ADJUST * torch.sqrt(
            frequency / frequency.max().clamp(min=1))  # (0 / 0 in its code before any image is selected)
        return contrastive_loss(projection, torch.cat([labels, top3[:, 0]]), top3, labels, self.centres, temperatures,
                                confident.to(projection.dtype))

    @torch.no_grad()
    def update_bank(self, rows, features, confident) -> None:
        """The confident rows' projections into the bank (every process's), then each class's centre: the
        mean of the bank over the images selected as it; zero for a class with none (its code's 0 / 0 would
        make the loss not a number; its runs select every labeled image long before the loss starts)."""
        rows, features, confident = (distributed.all_gather_cat(t) for t in (rows, features, confident))
        self.bank.index_copy_(0, rows, torch.where(confident[:, None], features, self.bank[rows]))
        members = (self.selected[None, :] == torch.arange(len(self.centres), device=rows.device)[:, None]).float()
        self.centres.copy_(members @ self.bank / members.sum(1, keepdim=True).clamp(min=1))

    def start_stage(self, ema_network, data, device, network) -> str:
        self.contrasting.fill_(True)
        self.contrasting_now = True
        return 'BaCon: the contrastive loss starts'

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict, assign)
        self.contrasting_now = bool(self.contrasting)
        return result

    def eval_logits(self, output):
        """The auxiliary head (its code evaluates `logits_aux`)."""
        return output.balanced
