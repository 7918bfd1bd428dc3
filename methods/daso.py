"""FixMatch w/ DASO (Oh et al., CVPR 2022; ytaek-oh/daso): semantic pseudo labels from class
prototypes of a queue of labeled features, blended with the linear ones according to the
current pseudo-label distribution, and a semantic alignment loss (lib/algorithm/daso.py, lib/models/daso_model.py)."""
import torch
import torch.nn.functional as F
from torch import nn

from methods.base import THRESHOLD, Batch, Flag, Method, StepResult, finite
from methods.common import DASO_NETWORKS
from utils import distributed
from utils.errors import UserError

FLAGS = (  # named after its config keys; the defaults are its configs' values
    THRESHOLD,
    Flag('--dist-temp', dict(type=float, default=0.3,
                             help='T_dist of the blending weights (DIST_TEMP; its configs: 1.5 for CIFAR-10 when the '
                                  'unlabeled distribution is the labeled one, else 0.3; sh/DASO.sh picks per row)'),
         'a finite number > 0', lambda v: finite(v) and v > 0),
    Flag('--proto-temp', dict(type=float, default=0.05,
                              help='T_proto of the semantic pseudo labels and the alignment loss (PROTO_TEMP)'),
         'a finite number > 0', lambda v: finite(v) and v > 0),
    Flag('--pretrain-steps', dict(type=int, default=5000,
                                  help='steps of plain FixMatch before the blending and the alignment loss '
                                       '(PRETRAIN_STEPS)'),
         'an integer >= 0', lambda v: v >= 0),
    Flag('--pl-dist-update-period', dict(type=int, default=100,
                                         help='steps per window of the pseudo-label counts that set the blending '
                                              '(PL_DIST_UPDATE_PERIOD)'),
         'an integer >= 1', lambda v: v >= 1),
    Flag('--psa-loss-weight', dict(type=float, default=1.0,
                                   help='weight of the semantic alignment loss (PSA_LOSS_WEIGHT)'),
         'a finite number >= 0', lambda v: finite(v) and v >= 0),
    Flag('--queue-max-size', dict(type=int, default=256,
                                  help='labeled features kept per class for the prototypes (MODEL.QUEUE.MAX_SIZE)'),
         'an integer >= 1', lambda v: v >= 1))


class DASO(Method):
    """FixMatch whose pseudo label, after --pretrain-steps, is p^ = (1 - w) p + w q: p the linear
    head's softmax, q = softmax(cos(feature, prototypes) / T_proto) the semantic one, and
    w = r[argmax p] with r the pseudo-label counts of the last window ** (1 / T_dist), scaled to
    max 1 (a class predicted often leans on q). The mask and the hard label come from p^; an
    alignment loss pulls the strong view's similarities towards q. Every piece of state is a buffer."""
    flags = FLAGS
    with_features = True
    networks = DASO_NETWORKS

    @classmethod
    def check_arguments(cls, args) -> None:
        """One labeled batch over all processes must fit in a class's queue."""
        if args.batch_size * distributed.launched_processes() > args.queue_max_size:
            raise UserError(f'--queue-max-size {args.queue_max_size} is smaller than one labeled batch of '
                            f'{args.batch_size * distributed.launched_processes()} (over all processes); raise it')

    @classmethod
    def idle_parts(cls, args, steps: int) -> list:
        idle = []
        if args.pretrain_steps >= steps:
            idle.append(f'the blending and the alignment loss never start (--pretrain-steps {args.pretrain_steps} '
                        f'>= the run\'s {steps} steps)')
        elif args.pl_dist_update_period >= steps:
            idle.append(f'the blending weights stay uniform (no window of --pl-dist-update-period '
                        f'{args.pl_dist_update_period} steps ends before the run\'s last step, {steps})')
        return idle

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        if num_features is None:
            raise TypeError('DASO needs num_features, the width of the network\'s pooled features')
        num_classes = len(data.labeled_per_class)
        self.threshold, self.pretrain_steps = args.threshold, args.pretrain_steps
        self.proto_temp, self.dist_temp = args.proto_temp, args.dist_temp
        self.period, self.align_weight = args.pl_dist_update_period, args.psa_loss_weight
        # a ring buffer per class of the newest queue_max_size labeled features, and their means
        self.register_buffer('queue', torch.zeros(num_classes, args.queue_max_size, num_features))
        self.register_buffer('pushed', torch.zeros(num_classes, dtype=torch.long))  # ever pushed, per class
        self.register_buffer('prototypes', torch.zeros(num_classes, num_features))  # zero until a class is seen
        # counts of the final pseudo labels of the current window, and of the last complete window
        # (uniform before the first: the reference's 0/0 is never read while pretraining >= the window)
        self.register_buffer('window', torch.zeros(num_classes))
        self.register_buffer('pl_dist', torch.ones(num_classes))
        self.register_buffer('step', torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def before_forward(self, images: Batch, ema_network: nn.Module) -> None:
        """The labeled batch's features from the weight EMA, BatchNorm on the batch's statistics as
        DASO's EMA network in train mode (the running statistics this moves are replaced by the
        online network's at the next EMA update), join the queue."""
        was_training = ema_network.training
        ema_network.train()
        features = ema_network(images.labeled.weak, with_features=True).features
        ema_network.train(was_training)
        self.push_labeled(features.float(), images.labeled.labels)

    @torch.no_grad()
    def push_labeled(self, features: torch.Tensor, y: torch.Tensor) -> None:
        """Enqueue the labeled batch's (EMA) features, the oldest of a full class making room, and
        recompute the prototypes. Under several processes the whole global batch, in rank order."""
        features, y = distributed.all_gather_cat(features.float()), distributed.all_gather_cat(y)
        one_hot = (y[:, None] == torch.arange(len(self.pushed), device=y.device)).long()
        rank_in_class = (one_hot.cumsum(0) - 1).gather(1, y[:, None]).squeeze(1)
        size = self.queue.shape[1]
        self.queue[y, (self.pushed[y] + rank_in_class) % size] = features  # distinct slots: batch <= size
        self.pushed += one_hot.sum(0)
        filled = self.pushed.clamp(max=size)
        in_use = torch.arange(size, device=y.device) < filled[:, None]
        self.prototypes.copy_((self.queue * in_use[..., None]).sum(1) / filled.clamp_min(1)[:, None])

    def similarity(self, features: torch.Tensor) -> torch.Tensor:
        """cos(feature, prototype) / T_proto, (rows, classes); 0 against a zero prototype."""
        return F.cosine_similarity(features[:, None], self.prototypes[None], dim=2) / self.proto_temp

    def loss(self, views: Batch) -> StepResult:
        x, u = views.labeled, views.unlabeled
        self.step += 1
        pretraining = self.step <= self.pretrain_steps  # a device flag: no step reads it on the host
        z_weak, z_strong = u.weak.logits, u.strong.logits
        f_weak, f_strong = u.weak.features, u.strong.features
        loss_x = F.cross_entropy(x.weak.logits, x.labels)
        with torch.no_grad():
            p = torch.softmax(z_weak.detach(), -1)
            q = torch.softmax(self.similarity(f_weak.detach()), -1)
            r = self.pl_dist ** (1 / self.dist_temp)
            r = r / r.sum()
            w = (r / r.max())[p.argmax(-1)][:, None]  # indexed by the linear label
            blended = torch.where(pretraining, p, (1 - w) * p + w * q)
            confidence, pseudo_label = blended.max(-1)
            mask = confidence >= self.threshold
        loss_u = (F.cross_entropy(z_strong, pseudo_label, reduction='none') * mask).mean()
        loss_align = -(q * F.log_softmax(self.similarity(f_strong), -1)).sum(1).mean()
        loss_align = torch.where(pretraining, torch.zeros_like(loss_align), loss_align)
        self.count_pseudo_labels(pseudo_label)
        terms = {'loss_x': loss_x, 'loss_u': loss_u, 'loss_align': loss_align}
        return StepResult(loss_x + loss_u + self.align_weight * loss_align, terms, mask, pseudo_label)

    @torch.no_grad()
    def count_pseudo_labels(self, pseudo_label: torch.Tensor) -> None:
        """Every row's final label (masked or not) joins the window; every `period` steps the window's
        counts replace pl_dist and a new window starts."""
        counts = (pseudo_label[:, None] == torch.arange(len(self.window), device=pseudo_label.device)).sum(0)
        counts = counts.to(self.window.dtype)
        distributed.all_reduce_sum(counts)
        self.window += counts
        window_ends = self.step % self.period == 0
        self.pl_dist.copy_(torch.where(window_ends, self.window, self.pl_dist))
        self.window.mul_(~window_ends)

    def unlabeled_prior(self) -> torch.Tensor:
        return self.pl_dist / self.pl_dist.sum()  # the pseudo labels of the last window
