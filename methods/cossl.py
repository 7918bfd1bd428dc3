"""FixMatch w/ CoSSL (Fan et al., CVPR 2022, "CoSSL: Co-Learning of Representation and Classifier
for Imbalanced Semi-Supervised Learning"), as its official code computes it (YUE-FAN/CoSSL at
9c7b840: train_cifar_fix.py, train_cifar_fix_cossl.py, train_small_imagenet127_fix_cossl.py,
utils/tfe_init.py). FIDELITY.md, "FixMatch w/ CoSSL", says where we differ.

One run, two stages (the official code runs them as two scripts, the second loading the first's
checkpoint):
- pre-training, steps 1..--cossl-start: FixMatch with two strong views per unlabeled image, Adam
  with decoupled weight decay (train_cifar_fix.py);
- co-learning, from --cossl-start on: the network carries on (its weights, EMA, optimizer state
  and schedule; Adam's weight decay becomes L2); a decoupled linear classifier on the weight EMA's
  features is first warmed up for --tfe-warmup-steps on its own (on a TFE set made once, or on
  per-step TFE batches: --tfe-warmup), then trained at every step beside the network. Its training
  batch is Tail-class Feature Enhancement (TFE): a class-balanced draw of labeled images whose
  features x (EMA encoder, eval mode) are, with probability (n_max - n_y) / n_max, mixed with the
  feature u of an image drawn from the whole training set, lam x + (1 - lam) u with
  lam ~ U(--max-lam, 1), keeping the labeled label y. It learns by cross-entropy with its own Adam
  (weight decay on the weight only) and its own weight EMA. The network's pseudo labels come from
  this classifier on the EMA encoder's features of the weak view; the EMA classifier on the EMA
  encoder is what is evaluated.
"""
import math
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dataset.batches import strong_kind
from dataset.device_batches import RowViews
from dataset.tensor_augment import send
from methods.common import SMALL_IMAGES
from methods.base import ADAM_WEIGHT_DECAY, OPTIMIZER, THRESHOLD, Batch, Flag, Method, StepResult, adam, finite
from models import NetworkOutput
from utils import distributed
from utils.compiler import eager
from utils.errors import UserError

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which the official code uses
FLAGS = (  # the defaults are the official scripts' values
    THRESHOLD,
    Flag('--cossl-start', dict(type=int, default=200000,
                               help='step at which co-learning starts; FixMatch pre-training before it (the '
                                    'official runs load the pre-training checkpoint of epoch 401 of 500)'),
         'an integer >= 0', lambda v: v >= 0),
    Flag('--max-lam', dict(type=float, default=0.6, help='TFE mixing weight lam ~ U(max_lam, 1) of the labeled '
                                                         'feature (--max_lam of the run scripts)'),
         'a number in [0, 1]', lambda v: finite(v) and 0 <= v <= 1),
    Flag('--lr-tfe', dict(type=float, default=0.002, help="learning rate of the classifier's Adam in its warm-up "
                                                          "(lr_tfe)"),
         'a finite number > 0', lambda v: finite(v) and v > 0),
    Flag('--lr-classifier', dict(type=float, help="learning rate of the classifier's Adam in co-learning (default: "
                                                  "--lr, as train_cifar_fix_cossl.py; the ImageNet-127 script uses "
                                                  "lr_tfe)"),
         'a finite number > 0', lambda v: finite(v) and v > 0),
    Flag('--wd-tfe', dict(type=float, default=5e-4, help="weight decay of the classifier's weight (wd_tfe)"),
         'a finite number >= 0', lambda v: finite(v) and v >= 0),
    Flag('--tfe-warmup-steps', dict(type=int, default=5000,
                                    help='steps of the classifier warm-up when co-learning starts (warm_tfe 10 '
                                         'epochs of 500)'),
         'an integer >= 0', lambda v: v >= 0),
    Flag('--tfe-view', dict(choices=('strong', 'weak'), default='strong',
                            help="the view of the classifier's images (strong in the CIFAR scripts, weak in the "
                                 "ImageNet-127 ones)")),
    Flag('--tfe-warmup', dict(choices=('offline', 'online'), default='offline',
                              help='the warm-up: on a TFE set made once by weight imprinting (the CIFAR scripts) or '
                                   'on the per-step TFE of co-learning (the ImageNet-127 scripts)')),
    OPTIMIZER)
BETA = 0.75  # the offline TFE set's l ~ Beta(0.75, 0.75) (utils/tfe_init.py)
DECAY = ADAM_WEIGHT_DECAY  # WeightEMA's 1 - 0.02 lr per step in pre-training; Adam's L2 0.02 lr in co-learning


def tfe_probability(labeled_per_class) -> torch.Tensor:
    """Per class, the probability that TFE mixes a labeled feature: (n_max - n_c) / n_max."""
    counts = torch.as_tensor(labeled_per_class, dtype=torch.float64)
    return ((counts.max() - counts) / counts.max()).float()


def tail_feature_enhancement(x: torch.Tensor, u: torch.Tensor, mix: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """TFE's features: lam x + (1 - lam) u in the rows where `mix`, else x (the labels stay the
    labeled ones)."""
    lam = torch.where(mix, lam, torch.ones_like(lam))[:, None]
    return lam * x + (1 - lam) * u


def offline_tfe_set(labeled_features, labels, labeled_probs, unlabeled_features, unlabeled_probs, counts,
                    rng: np.random.Generator):
    """The CIFAR warm-up's TFE set (utils/tfe_init.py, TFE): the labeled features and, for each class
    c with n_c < n_max, n_max - n_c more, l a + (1 - l) b labeled c, with a a labeled feature of c
    drawn with replacement, b in turn the features (other classes' labeled ones, then the unlabeled
    ones) that the imprinted classifier finds most class-c-like (`*_probs[:, c]`, descending), and
    l ~ Beta(0.75, 0.75). Returns (features, labels)."""
    features, targets, n_max = [labeled_features], [labels], max(counts)
    for c, n in enumerate(counts):
        if n >= n_max:
            continue
        size, other = n_max - n, labels != c
        own = labeled_features[labels == c]
        others = torch.cat([labeled_features[other], unlabeled_features])
        closest = torch.cat([labeled_probs[other], unlabeled_probs])[:, c].sort(descending=True, stable=True).indices
        a = own[torch.as_tensor(rng.choice(len(own), size), device=own.device)]
        lam = torch.as_tensor(rng.beta(BETA, BETA, size), dtype=own.dtype, device=own.device)[:, None]
        features.append(lam * a + (1 - lam) * others[closest[:size]])
        targets.append(torch.full((size,), c, dtype=labels.dtype, device=labels.device))
    return torch.cat(features), torch.cat(targets)


def imprinted_probabilities(features, labels, num_classes: int):
    """weight_imprint: the classifier whose rows are the unit-norm class means of the labeled
    features (no bias); returns the function features -> its softmax."""
    means = torch.stack([features[labels == c].mean(0) for c in range(num_classes)])
    weight = means / means.norm(dim=1, keepdim=True)
    return lambda f: torch.softmax(f @ weight.T, dim=1)


def float32(device: torch.device):
    """float32 inside the step's autocast region (--amp); nothing to do outside one."""
    on = device.type in ('cuda', 'cpu') and torch.is_autocast_enabled(device.type)
    return torch.autocast(device.type, enabled=False) if on else nullcontext()


def linear_cross_entropy(features, labels, weight, bias):
    """The cross-entropy of softmax(features W^T + b) and its gradients in closed form:
    (loss, dL/dW, dL/db)."""
    logits = F.linear(features, weight, bias)
    residual = (torch.softmax(logits, dim=1) - F.one_hot(labels, len(bias)).to(logits.dtype)) / len(labels)
    return F.cross_entropy(logits, labels), residual.T @ features, residual.sum(0)


class LinearClassifier(nn.Module):
    """The decoupled classifier: a linear layer (weight, bias), its Adam moments (weight decay on
    the weight only, as the official param groups) and its weight EMA, all buffers.

    Its Adam step is written out rather than torch.optim.Adam's: since PyTorch 2.1 (pytorch/pytorch
    pull request 104796) that moves the first moment by a lerp, which rounds otherwise than the
    multiply-add of the PyTorch 1.x Adam the official code ran, which this step reproduces."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        for name in ('weight', 'ema_weight', 'm_weight', 'v_weight'):
            self.register_buffer(name, torch.zeros(num_classes, num_features))
        for name in ('bias', 'ema_bias', 'm_bias', 'v_bias'):
            self.register_buffer(name, torch.zeros(num_classes))
        self.register_buffer('steps', torch.zeros((), dtype=torch.long))  # Adam steps taken
        self.host_steps = 0  # the same on the host (bias corrections without reading the device)

    def reset(self, generator: torch.Generator) -> None:
        """nn.Linear's initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, from
        `generator`; the EMA equal to it; a fresh Adam."""
        bound = 1 / math.sqrt(self.weight.shape[1])
        for param, ema in ((self.weight, self.ema_weight), (self.bias, self.ema_bias)):
            param.copy_((torch.rand(param.shape, generator=generator) * 2 - 1) * bound)
            ema.copy_(param)
        self.restart_optimizer()

    def restart_optimizer(self) -> None:
        for moment in (self.m_weight, self.v_weight, self.m_bias, self.v_bias):
            moment.zero_()
        self.steps.zero_()
        self.host_steps = 0

    def logits(self, features, ema: bool = False):
        return F.linear(features, self.ema_weight, self.ema_bias) if ema else F.linear(features, self.weight, self.bias)

    @torch.no_grad()
    def step(self, features, labels, lr: float, weight_decay: float, ema_decay: float) -> torch.Tensor:
        """One Adam step on the cross-entropy of (features, labels), gradients averaged over the
        processes, then the EMA update; returns the loss."""
        with float32(features.device):
            loss, grad_weight, grad_bias = linear_cross_entropy(features.float(), labels, self.weight, self.bias)
        grads = torch.cat([grad_weight.flatten(), grad_bias])
        distributed.all_reduce_sum(grads)
        grad_weight, grad_bias = (grads / distributed.world_size()).split([grad_weight.numel(), grad_bias.numel()])
        self.host_steps += 1
        self.steps += 1
        (b1, b2), t = ADAM_BETAS, self.host_steps
        for param, grad, m, v, decay in ((self.weight, grad_weight.view_as(self.weight), self.m_weight, self.v_weight,
                                          weight_decay), (self.bias, grad_bias, self.m_bias, self.v_bias, 0.0)):
            grad = grad + decay * param  # Adam's (coupled) weight decay
            m.mul_(b1).add_(grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denominator = (v.sqrt() / math.sqrt(1 - b2 ** t)).add_(ADAM_EPS)
            param.addcdiv_(m, denominator, value=-lr / (1 - b1 ** t))
        for ema, param in ((self.ema_weight, self.weight), (self.ema_bias, self.bias)):
            ema.mul_(ema_decay).add_(param, alpha=1 - ema_decay)
        return loss


class EvaluatedNetwork(nn.Module):
    """The weight EMA's encoder with the EMA classifier on top (validate_teacher)."""

    def __init__(self, network: nn.Module, classifier: LinearClassifier):
        super().__init__()
        self.network, self.classifier = network, classifier
        self.train(network.training)  # (evaluate() puts the weight EMA back in the mode it found)

    def forward(self, images):
        features = self.network(images, with_features=True).features.float()
        return NetworkOutput(self.classifier.logits(features, ema=True))


class CoSSL(Method):
    """FixMatch pre-training, then co-learning with a decoupled classifier trained by TFE (module
    docstring). State (buffers): the stage, the classifier (weights, Adam moments, EMA) and the
    co-learning steps taken, whose number seeds each step's draws."""
    flags = FLAGS
    defaults = {'optimizer': 'adam'}  # (the official Adam; --optimizer sgd: the loop's SGD)
    networks = dict.fromkeys(SMALL_IMAGES, 'wideresnet_cossl')  # (its models/wrn.py)
    unlabeled_views = {'weak': 'weak', 'strong': 'strong', 'strong2': 'strong'}

    @classmethod
    def check_arguments(cls, args) -> None:
        if args.cossl_start > args.total_steps:
            raise UserError(f'--cossl-start {args.cossl_start} is not allowed with --version CoSSL; use an integer '
                            f'from 0 to --total-steps ({args.total_steps})')

    @classmethod
    def unread_settings(cls, settings: dict) -> dict:
        unread = super().unread_settings(settings)
        unread.pop('ema_decay', None)  # (the classifier's own weight EMA reads it, with or without the network's)
        return unread

    @classmethod
    def idle_parts(cls, args, steps: int) -> list:
        if args.cossl_start >= steps:
            return [f'co-learning never starts (--cossl-start {args.cossl_start} >= the run\'s {steps} steps): '
                    f'the run is FixMatch with two strong views']
        return []

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        if num_features is None:
            raise TypeError("CoSSL needs num_features, the width of the network's pooled features")
        self.threshold, self.max_lam, self.seed = args.threshold, args.max_lam, args.seed
        self.warmup_lr, self.weight_decay, self.ema_decay = args.lr_tfe, args.wd_tfe, args.ema_decay
        self.colearning_lr = args.lr if args.lr_classifier is None else args.lr_classifier
        self.warmup_steps, self.batch_size, self.strong_view = args.tfe_warmup_steps, args.batch_size, \
            args.tfe_view == 'strong'
        self.strong_kind = strong_kind(args)  # (the loop's strong views: RandAugmentMC, or USB's RandAugment)
        self.offline_warmup = args.tfe_warmup == 'offline'
        self.unlabeled_rows = np.asarray(data.unlabeled_idx)
        self.stage_starts = (args.cossl_start,)
        labels = np.asarray(data.labeled_targets if data.labeled_targets is not None else data.labels[data.labeled_idx])
        order = np.argsort(labels, kind='stable')  # the labeled rows by class, for class-balanced draws
        self.labeled_rows, counts = np.asarray(data.labeled_idx)[order], np.bincount(labels, minlength=data.num_classes)
        self.class_counts, self.class_starts = torch.as_tensor(counts), torch.as_tensor(np.cumsum(counts) - counts)
        self.whole_rows = np.concatenate([data.labeled_idx, data.unlabeled_idx])  # TFE's u: the whole training set
        self.row_views = RowViews(data.images, data.mean, data.std, data.flip, data.cutout)  # (the loop's views)
        self.register_buffer('mix_probability', tfe_probability(data.labeled_per_class))
        self.register_buffer('colearning_started', torch.zeros((), dtype=torch.bool))
        self.colearning = False  # the same on the host
        self.classifier = LinearClassifier(num_features, data.num_classes)
        self.pseudo_label = self.confidence = self.loss_tfe = None  # of the step, from before_forward
        self.adam, self.encoder_optimizer = args.optimizer == 'adam', None

    def load_state_dict(self, state_dict, strict=True, assign=False):
        result = super().load_state_dict(state_dict, strict, assign)
        self.colearning = bool(self.colearning_started)  # the host's copies (read once, when a run resumes)
        self.classifier.host_steps = int(self.classifier.steps)
        return result

    def make_optimizer(self, model: nn.Module, args) -> torch.optim.Optimizer:
        """The official Adam (train_cifar_fix.py): WeightEMA's multiplying every weight by 1 - 0.02 lr
        after each step is Adam's decoupled weight decay 0.02 (methods.base.adam); --optimizer sgd: the loop's."""
        if not self.adam:
            return super().make_optimizer(model, args)
        self.encoder_optimizer = adam(model, args.lr)
        return self.encoder_optimizer

    def generator(self, stage: int, step: int, process: int = None) -> torch.Generator:
        """The host generator of one step's draws: a pure function of (seed, process, stage, step)."""
        process = distributed.rank() if process is None else process
        seed = np.random.SeedSequence([self.seed, process, stage, step]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(seed))

    def views(self, rows: np.ndarray, generator: torch.Generator, device, strong=None) -> torch.Tensor:
        """A view (default: --tfe-view) of the training images `rows`, normalised, on `device`."""
        strong = self.strong_view if strong is None else strong
        return self.row_views(rows, self.strong_kind if strong else 'weak', generator, device)

    def draw_tfe_batch(self, generator: torch.Generator, size: int):
        """A TFE batch's draws: `size` class-balanced labeled rows (a class uniformly, then one of its
        images uniformly: the official WeightedRandomSampler) with their classes, as many rows of the
        whole training set, and per row a uniform coin (mix if below the class's probability) and a
        uniform for lam."""
        classes = torch.randint(len(self.class_counts), (size,), generator=generator)
        within = (torch.rand(size, generator=generator, dtype=torch.float64) * self.class_counts[classes]).long()
        x_rows = self.labeled_rows[(self.class_starts[classes] + within).numpy()]
        u_rows = self.whole_rows[torch.randint(len(self.whole_rows), (size,), generator=generator).numpy()]
        return x_rows, classes, u_rows, torch.rand(size, generator=generator), torch.rand(size, generator=generator)

    @torch.no_grad()
    def tfe_step(self, ema_network: nn.Module, generator: torch.Generator, device, lr: float) -> torch.Tensor:
        """One classifier step on a TFE batch (draw_tfe_batch): the EMA encoder's features of both
        draws, the mixing, one Adam step at `lr` and the EMA; returns the loss."""
        x_rows, classes, u_rows, coin, lam = self.draw_tfe_batch(generator, self.batch_size)
        images = self.views(np.concatenate([x_rows, u_rows]), generator, device)
        x, u = ema_network(images, with_features=True).features.float().chunk(2)
        labels = send(classes, x)
        mix = send(coin, x) < self.mix_probability[labels]
        lam = self.max_lam + (1 - self.max_lam) * send(lam, x)
        features = tail_feature_enhancement(x, u, mix, lam)
        return self.classifier.step(features, labels, lr, self.weight_decay, self.ema_decay)

    def features(self, ema_network: nn.Module, rows: np.ndarray, strong: bool, generator, device, batch=512):
        """The EMA encoder's features of one view of every image of `rows`, in order."""
        return torch.cat([ema_network(self.views(rows[i:i + batch], generator, device, strong),
                                      with_features=True).features.float() for i in range(0, len(rows), batch)])

    def warm_up_offline(self, ema_network: nn.Module, device) -> None:
        """utils/tfe_init.py's classifier_warmup: the TFE set made once from the features of the
        labeled images (weak view) and of the pool (strong view; the imprinted classifier's
        probabilities from a weak view), then --tfe-warmup-steps steps over passes of it in random
        order. Every process makes the same set and batches (draws seeded without the process)."""
        generator = self.generator(3, 0, process=0)
        labels = torch.arange(len(self.class_counts)).repeat_interleave(self.class_counts).to(device)
        labeled = self.features(ema_network, self.labeled_rows, False, generator, device)  # (sorted by class)
        probabilities = imprinted_probabilities(labeled, labels, len(self.class_counts))
        unlabeled = self.features(ema_network, self.unlabeled_rows, True, generator, device)
        unlabeled_probs = probabilities(self.features(ema_network, self.unlabeled_rows, False, generator, device))
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 3, 1]))
        features, targets = offline_tfe_set(labeled, labels, probabilities(labeled), unlabeled, unlabeled_probs,
                                            self.class_counts.tolist(), rng)
        per_pass, order = max(1, len(features) // self.batch_size), None
        for step in range(self.warmup_steps):
            if step % per_pass == 0:
                order = torch.as_tensor(rng.permutation(len(features)), device=features.device)
            rows = order[(step % per_pass) * self.batch_size:(step % per_pass + 1) * self.batch_size]
            self.classifier.step(features[rows], targets[rows], self.warmup_lr, self.weight_decay, self.ema_decay)

    @torch.no_grad()
    def start_stage(self, ema_network: nn.Module, data, device, network: nn.Module = None) -> str:
        """Co-learning starts: a fresh classifier is warmed up on the EMA encoder's features (offline
        or online, --tfe-warmup), then its weights and its EMA carry on with a fresh Adam (`network`,
        the one being trained, is not read)."""
        was_training = ema_network.training
        ema_network.eval()
        self.classifier.reset(self.generator(0, 0, process=0))
        if self.offline_warmup:
            self.warm_up_offline(ema_network, device)
        else:
            for step in range(1, self.warmup_steps + 1):
                self.tfe_step(ema_network, self.generator(1, step), device, self.warmup_lr)
        ema_network.train(was_training)
        self.classifier.restart_optimizer()
        for group in self.encoder_optimizer.param_groups if self.encoder_optimizer else ():
            group.update(weight_decay=DECAY * group['initial_lr'], decoupled_weight_decay=False)  # (as the
            # official co-learning script sets its loaded Adam's weight decay to 0.02 lr)
        self.colearning_started.fill_(True)
        self.colearning = True
        return (f'co-learning starts: the decoupled classifier warmed up for {self.warmup_steps} steps on '
                f'{"a TFE set made once" if self.offline_warmup else "TFE batches"}; pseudo labels from it, '
                f'the EMA classifier evaluated')

    @eager  # (--compile: its host draws and NumPy run as they are, outside the compiled step)
    @torch.no_grad()
    def before_forward(self, images: Batch, ema_network: nn.Module) -> None:
        """In co-learning: the pseudo labels of the weak unlabeled view from the classifier on the EMA
        encoder (eval mode), then one classifier step (the official order)."""
        if not self.colearning:
            return
        u_weak = images.unlabeled.weak
        was_training = ema_network.training
        ema_network.eval()
        features = ema_network(u_weak, with_features=True).features.float()
        with float32(u_weak.device):
            self.confidence, self.pseudo_label = torch.softmax(self.classifier.logits(features), dim=1).max(dim=1)
        self.loss_tfe = self.tfe_step(ema_network, self.generator(2, self.classifier.host_steps + 1), u_weak.device,
                                      self.colearning_lr)
        ema_network.train(was_training)

    def loss(self, views: Batch) -> StepResult:
        x, u = views.labeled, views.unlabeled
        if self.colearning:
            confidence, pseudo_label = self.confidence, self.pseudo_label
        else:
            confidence, pseudo_label = torch.softmax(u.weak.logits.detach(), dim=1).max(dim=1)
        mask = confidence >= self.threshold
        loss_x = F.cross_entropy(x.weak.logits, x.labels)
        loss_u = (F.cross_entropy(torch.cat([u.strong.logits, u.strong2.logits]), pseudo_label.repeat(2),
                                  reduction='none') * mask.repeat(2)).mean()
        terms = {'loss_x': loss_x, 'loss_u': loss_u, 'loss_tfe': self.loss_tfe if self.colearning else
                 loss_x.new_zeros(())}
        return StepResult(loss_x + loss_u, terms, mask, pseudo_label)

    def eval_network(self, network: nn.Module) -> nn.Module:
        """In co-learning, the EMA classifier on the encoder's features (validate_teacher)."""
        return EvaluatedNetwork(network, self.classifier) if self.colearning else network
