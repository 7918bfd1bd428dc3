"""FixMatch w/ CReST+ (Wei et al., CVPR 2021) as the DASO authors' PyTorch code computes it
(ytaek-oh/daso, FixMatchCReST; FIDELITY.md, "CReST+").

Training is G generations of T // G steps. At the start of every generation after the first, the
weight EMA of the last one pseudo-labels the unlabeled pool (un-augmented, eval mode) and, of the
images predicted as class k, the int(rho_k * count) most confident join the ORIGINAL labeled set
with their pseudo labels, rho_k = (n_{C-1-k} / n_0) ** (1 / alpha) from the labeled counts n (the
rarer the class, the more of its predictions are kept). The network, its EMA, the optimizer and
the schedule then start afresh (train.next_generation). Every step is FixMatch whose pseudo labels
come from progressively aligned predictions: p * pi / p_model, renormalised, with p_model the mean
prediction over the last 128 unlabeled batches and pi the labeled distribution ** t_g, the
temperature t_g falling linearly from 1 in the first generation to --da-t-min in the last.
"""
import argparse

import numpy as np
import torch
from torch import nn

from dataset.device_batches import EvalBatches
from methods.base import THRESHOLD, Flag
from methods.common import with_pool_images
from methods.fixmatch import FixMatch
from utils import distributed
from utils.errors import UserError

QUEUE_BATCHES = 128  # p_model: the mean prediction over this many latest unlabeled batches
EPS = 1e-6           # of the alignment's ratio (DASO's DistributionAlignment)
FLAGS = (  # the defaults are the values of DASO's configs; check_arguments checks them
    THRESHOLD,
    Flag('--generations', dict(type=int, default=5, help='generations of self-training, each --total-steps // G '
                                                         'steps (the last one also runs the remainder)')),
    Flag('--crest-alpha', dict(type=float, default=3.0, help='alpha of the sampling rates (n_{C-1-k} / n_0) ** '
                                                             '(1 / alpha)')),
    Flag('--da-t-min', dict(type=float, default=0.5, help='temperature of the alignment target in the last '
                                                          'generation (1 in the first)')),
    Flag('--dist-align', dict(action=argparse.BooleanOptionalAction, default=True,
                              help="progressive distribution alignment of the pseudo labels (off: CReST, as DASO's "
                                   "STL-10 config)")))


def sampling_rates(labeled_per_class, alpha: float) -> torch.Tensor:
    """rho_k = (n_{C-1-k} / max n) ** (1 / alpha), in float32 as the reference (class k's rate is
    read from the class of the mirrored frequency rank: the tail keeps everything)."""
    counts = torch.as_tensor(labeled_per_class, dtype=torch.float32)
    return torch.pow(counts / counts.max(), 1 / alpha).flip(0)


def da_temperature(generation: int, generations: int, t_min: float) -> float:
    """t_g = 1 - g / (G - 1) * (1 - t_min) for the 0-based generation g (1 with a single one)."""
    return 1.0 - generation / max(1, generations - 1) * (1 - t_min)


def align(p: torch.Tensor, target: torch.Tensor, p_model: torch.Tensor) -> torch.Tensor:
    """Distribution alignment: p * (target + eps) / (p_model + eps), renormalised per row."""
    aligned = p * (target + EPS) / (p_model + EPS)
    return aligned / aligned.sum(dim=1, keepdim=True)


def select(confidence: torch.Tensor, label: torch.Tensor, rates: torch.Tensor) -> np.ndarray:
    """Per pool position, the pseudo label if the image is kept, else -1: of the positions predicted
    as class k, the int(rates[k] * count) most confident (ties: the earlier position)."""
    confidence, label = confidence.cpu().numpy(), label.cpu().numpy()
    chosen = np.full(len(label), -1, np.int64)
    for k in range(len(rates)):
        where = np.flatnonzero(label == k)
        keep = int(rates[k] * len(where))  # float32 product, as the reference
        chosen[where[np.argsort(-confidence[where], kind='stable')[:keep]]] = k
    return chosen


@torch.no_grad()
def pool_predictions(model: nn.Module, data, device, batch_size: int = 512):
    """Confidence and hard label of `model` in eval mode on every unlabeled-pool image, normalised
    only (no augmentation), as CPU tensors in pool order. Under several processes each predicts an
    equal share (the last padded) and all receive the same gathered result."""
    n, world = len(data.unlabeled_idx), distributed.world_size()
    share = -(-n // world)
    rows = data.unlabeled_idx[distributed.rank() * share:(distributed.rank() + 1) * share]
    confidence = torch.zeros(share, device=device)
    label = torch.zeros(share, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    start = 0
    for images, _, _ in EvalBatches(data.images, None, data.mean, data.std, batch_size, device, rows):
        probabilities = torch.softmax(model(images).logits.float(), dim=-1)
        confidence[start:start + len(images)], label[start:start + len(images)] = probabilities.max(dim=-1)
        start += len(images)
    model.train(was_training)
    return distributed.all_gather_cat(confidence)[:n].cpu(), distributed.all_gather_cat(label)[:n].cpu()


def generation_seed(seed: int, generation: int) -> int:
    """The seed of generation g's fresh network: --seed for the first, else one derived from (seed, g)."""
    return seed if generation == 0 else int(np.random.SeedSequence([seed, generation]).generate_state(1)[0])


class CReSTPlus(FixMatch):
    """FixMatch with progressively aligned pseudo labels and generations of self-training. State
    (buffers): the generation, the pseudo label of every pool image selected at its start (-1: not
    selected), and the ring of the last 128 unlabeled batch means with the count of batches seen."""
    flags = FLAGS

    @classmethod
    def check_arguments(cls, args) -> None:
        """One line, exit 2, for a CReST+ flag out of its range."""
        limits = {'--generations': (args.generations, 1 <= args.generations <= args.total_steps,
                                    f'an integer from 1 to --total-steps ({args.total_steps})'),
                  '--crest-alpha': (args.crest_alpha, args.crest_alpha > 0, 'a number > 0'),
                  '--da-t-min': (args.da_t_min, 0 <= args.da_t_min <= 1, 'a number from 0 to 1')}
        for flag, (value, allowed, what) in limits.items():
            if not allowed:
                raise UserError(f'{flag} {value} is not allowed with --version CReST+; use {what}')

    @classmethod
    def unread_settings(cls, settings: dict) -> dict:
        unread = super().unread_settings(settings)
        if settings.get('generations') == 1:
            unread['crest_alpha'] = '--generations 1 never samples pseudo-labelled images into the labeled set'
        if settings.get('dist_align') is False:
            unread['da_t_min'] = '--no-dist-align aligns no pseudo labels'
        elif settings.get('generations') == 1:
            unread['da_t_min'] = 'with --generations 1 the alignment target\'s temperature stays 1'
        return unread

    @classmethod
    def idle_parts(cls, args, steps: int) -> list:
        length = args.total_steps // args.generations
        if args.generations == 1 or length >= args.eval_step:
            return []
        return [f'generations of {length} steps are shorter than an epoch (--eval-step {args.eval_step}): some end '
                f'before any evaluation']

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        counts = torch.as_tensor(data.labeled_per_class, dtype=torch.float32)
        self.dist_align, self.t_min, self.generations = args.dist_align, args.da_t_min, args.generations
        self.seed = args.seed
        steps = args.total_steps // args.generations  # per generation; the last one also runs the remainder
        self.generation_starts = tuple(g * steps for g in range(1, args.generations))
        self.register_buffer('p_l', counts / counts.sum())  # the original labeled distribution
        self.register_buffer('rates', sampling_rates(data.labeled_per_class, args.crest_alpha))
        self.register_buffer('generation', torch.zeros((), dtype=torch.long))
        self.register_buffer('temperature', torch.ones(()))  # t_g of the alignment target
        self.register_buffer('pool_pseudo_label', torch.full((len(data.unlabeled_idx),), -1, dtype=torch.long))
        self.register_buffer('queue', torch.zeros(QUEUE_BATCHES, len(counts)))
        self.register_buffer('queued', torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def pseudo_distribution(self, u_weak: torch.Tensor) -> torch.Tensor:
        """softmax(u_weak) aligned towards pi = p_l ** t / sum(p_l ** t) (no alignment with
        --no-dist-align); p_model includes this batch."""
        p = torch.softmax(u_weak, dim=-1)
        p_model = self.push(p)
        if not self.dist_align:
            return p
        target = self.p_l ** self.temperature
        return align(p, target / target.sum(), p_model)

    def push(self, p: torch.Tensor) -> torch.Tensor:
        """Add the batch mean of p (over every process's batch) to the ring; return the mean of the
        ring's filled rows, which is the mean over all their predictions as batches are equal."""
        batch_mean = distributed.mean_over_processes(p)
        self.queue.index_copy_(0, (self.queued % QUEUE_BATCHES).view(1), batch_mean[None])
        self.queued += 1
        return self.queue.sum(0) / self.queued.clamp(max=QUEUE_BATCHES)

    @torch.no_grad()
    def start_generation(self, ema_model: nn.Module, data, device) -> int:
        """Pseudo-label the pool with the last generation's weight EMA and keep the selection (it
        replaces the previous one); return the seed of the new generation's network."""
        confidence, label = pool_predictions(ema_model, data, device)
        self.pool_pseudo_label.copy_(torch.from_numpy(select(confidence, label, self.rates.cpu())))
        self.generation += 1
        self.temperature.fill_(da_temperature(int(self.generation), self.generations, self.t_min))
        return generation_seed(self.seed, int(self.generation))

    def training_data(self, data):
        """`data` (the original split) with the selected pool images added to its labeled set, their
        pseudo labels as targets; the unlabeled pool keeps them too."""
        return with_pool_images(data, self.pool_pseudo_label)

    def describe_generation(self) -> str:
        added = np.bincount(self.pool_pseudo_label[self.pool_pseudo_label >= 0].cpu().numpy(),
                            minlength=len(self.p_l))
        return (f'generation {int(self.generation) + 1} of {self.generations}: {added.sum()} pseudo-labeled pool '
                f'images added to the original labeled set (per class {added.tolist()}), alignment temperature '
                f'{float(self.temperature):g}; network, EMA, optimizer and schedule restarted')

    def unlabeled_prior(self):
        """p_model, the mean prediction over the last 128 unlabeled batches."""
        if self.queued == 0:
            return None
        p_model = self.queue.sum(0)
        return p_model / p_model.sum()
