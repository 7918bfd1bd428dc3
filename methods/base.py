"""The method contract: every member the one training loop (train.py) calls on a method.

Read this page first to add a method. A method is one file in methods/ with one subclass of
`Method`, plus one line in `METHODS` (methods/__init__.py), and usually a launcher
sh/<name>.sh that holds its recipe. Each member below has a default that does nothing special,
so a method overrides only what makes it differ. The loop, per run:

    check_arguments(args)                      before any data is read (one-line errors)
    unread_settings(settings)                  the settings its configuration never reads (refused if given)
    idle_parts(args, steps)                    what never acts in this run, said when it starts
    method = Method(args, data, num_features)  its state: buffers, checkpointed with the network
    make_optimizer(model, args)                the network's optimizer (each generation's too)
    every step:   before_forward(images, ...)  ->  network forward on every view  ->  loss(views)
    every epoch:  end_epoch()  ->  evaluate eval_network(...) by eval_logits(...)  ->  log unlabeled_prior(),
                  metrics()
    at a step in generation_starts: start_generation(...), then the training data of
                  training_data(...) and a fresh network, optimizer and schedule
    at a step in stage_starts: start_stage(...) (then, with stages_change_labeled_set, the training
                  data of training_data(...)); the network, optimizer and schedule carry on

A step's inputs and outputs have names: a method lists the views it wants of each labeled and each
unlabeled image by name (`labeled_views`, `unlabeled_views`), and its hooks receive a `Batch` whose
`labeled` and `unlabeled` sides give each view by that name: its images in before_forward, the
network's output on them (models.NetworkOutput: logits, balanced, features, ...) in loss, e.g.
`views.unlabeled.strong.logits`.

Every piece of state a method keeps must be a buffer (register_buffer), so that a checkpoint
holds it and a resumed run continues exactly; under several processes every process must hold
the same state (reduce what a step adds over the processes: utils.distributed). No member called
at every step may read a device value on the host (.item(), bool(tensor), ...): the GPU would wait.
"""
import math
from typing import Callable, NamedTuple, Optional, Tuple

import torch
from torch import nn

from methods.common import param_groups
from models import NetworkOutput


class Flag(NamedTuple):
    """A command-line flag a method reads: argparse's name and keyword arguments, and its check.
    train.py adds it to --help in the group of the methods that read it; passing it to another
    method is an error; a bad value is one line ('--name V is not allowed; use <allowed>')."""
    name: str                          # e.g. '--dist-temp'
    options: dict                      # argparse keyword arguments: type, default, help, ...
    allowed: str = ''                  # what a good value is, in words
    valid: Optional[Callable] = None   # value -> bool; None: any value argparse accepts

    @property
    def dest(self) -> str:
        return self.name[2:].replace('-', '_')


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# Flags that several methods read (a method lists the ones it reads in its `flags`)
THRESHOLD = Flag('--threshold', dict(type=float, default=0.95, help='confidence threshold of pseudo labels'),
                 'a number in [0, 1]', lambda v: finite(v) and 0 <= v <= 1)
TAU = Flag('--tau', dict(type=float, default=1.0, help='exponent of the priors in the logit adjustment'),
           'a finite number', finite)
EST_EPOCH = Flag('--est-epoch', dict(type=int, default=5,
                                     help='epochs before the estimate of the unlabeled distribution starts (ACR_d logs '
                                          'it, ACR sets tau1, CCL adjusts by it)'),
                 'an integer >= 0', lambda v: v >= 0)
EMA_U = Flag('--ema-u', dict(type=float, default=0.9,
                             help="momentum of the method's estimate of the unlabeled class distribution "
                                  "(SimPro: per epoch; ACR: per step)"),
             'a number in [0, 1]', lambda v: finite(v) and 0 <= v <= 1)
OPTIMIZER = Flag('--optimizer', dict(choices=('sgd', 'adam'), default='sgd',
                                     help="the network's optimizer: the loop's SGD (momentum 0.9, --nesterov, "
                                          "--wdecay), or Adam at --lr with decoupled weight decay 0.02 on every "
                                          "parameter, as CoSSL's FixMatch scripts (its WeightEMA's 1 - 0.02 lr per "
                                          "step; Table 3's gamma_t~286 block)"))
ADAM_WEIGHT_DECAY = 0.02


def adam(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """CoSSL's FixMatch optimizer (train_cifar_fix.py, train_small_imagenet127_fix.py): Adam whose
    weight EMA multiplies every weight by 1 - 0.02 lr after each step, i.e. decoupled weight decay 0.02.
    Multi-tensor (foreach) on every device: a few operations per step instead of a few per parameter."""
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=ADAM_WEIGHT_DECAY, decoupled_weight_decay=True,
                            foreach=True)


class StepResult(NamedTuple):
    """What `Method.loss` returns for one step."""
    loss: torch.Tensor          # the scalar to minimise
    terms: dict                 # its named parts (scalars), logged as epoch means
    mask: torch.Tensor          # (unlabeled rows,) bool: the rows whose pseudo label is trained on
    pseudo_label: torch.Tensor  # (unlabeled rows,) long: each row's hard pseudo label (logged accuracy)


class Views:
    """One side of a step, the labeled or the unlabeled batch: each of the method's views of its
    images by its name (`views.weak`, `views.strong2`, ...) and `every` view at once (all their
    rows, view by view in the order the method lists them). Each is the view's images (before the
    forward pass) or the network's output on them (a NetworkOutput, after it), sliced from the
    step's when it is first read: a step spends nothing on the views it does not read.
    `labels`: the classes of the labeled batch (None for the unlabeled one, whose classes a method
    never sees); `index`: the positions of the batch's images in the labeled set it trains on
    (Method.training_data's) or in the unlabeled pool."""

    def __init__(self, names: Tuple[str, ...], step, start: int, size: int, labels=None, index=None):
        self.names, self.step, self.start, self.size, self.labels, self.index = names, step, start, size, labels, index

    def __getattr__(self, name: str):  # (called for a name that is not yet an attribute: a view's)
        if name == 'every':
            start, stop = self.start, self.start + len(self.names) * self.size
        elif name in self.__dict__.get('names', ()):
            start = self.start + self.names.index(name) * self.size
            stop = start + self.size
        else:
            raise AttributeError(f'no view {name!r}; the views are {", ".join(self.__dict__.get("names", ()))}')
        value = self.step.rows(start, stop) if isinstance(self.step, NetworkOutput) else self.step[start:stop]
        setattr(self, name, value)  # (read once)
        return value


class Batch(NamedTuple):
    """A step's labeled and unlabeled batch, their views by name (Views)."""
    labeled: Views
    unlabeled: Views

    @classmethod
    def of(cls, method: 'Method', step, y: torch.Tensor, u_index: torch.Tensor,
           x_index: Optional[torch.Tensor] = None) -> 'Batch':
        """The batch of a step's rows (`step`: its images or the network's output on them; the
        labeled views' rows, then the unlabeled views'), whose labeled batch has the classes `y` and
        the positions `x_index` in the labeled set, and whose unlabeled batch has the pool positions
        `u_index`."""
        labeled_rows = len(method.labeled_views) * len(y)
        return cls(Views(tuple(method.labeled_views), step, 0, len(y), labels=y, index=x_index),
                   Views(tuple(method.unlabeled_views), step, labeled_rows, len(u_index), index=u_index))


class Method(nn.Module):
    """FixMatch-shaped defaults for every member the loop calls."""

    flags: Tuple[Flag, ...] = ()
    """The flags it reads besides the loop's (core/command_line.py); a run stores and compares only these."""
    launcher: Optional[str] = None
    """Its launcher, the one source of its recipe per dataset and row; None: sh/<its name>.sh."""
    labeled_views: dict = {'weak': 'weak'}
    """The views drawn of each labeled image, in order: name -> kind, the kind one of 'weak' (flip,
    reflect-padded crop), 'strong' (weak, then RandAugmentMC), 'crop_flip' (zero-padded crop, then
    flip) or 'contrastive' (CCL's); dataset.augment.VIEW_KINDS."""
    unlabeled_views: dict = {'weak': 'weak', 'strong': 'strong'}
    """The views drawn of each unlabeled image, in order: name -> kind."""
    two_heads: bool = False
    """The network has a second, balanced linear head (NetworkOutput.balanced)."""
    experts: int = 0
    """The network has this many expert heads on CPE's classwise BatchNorm branches (NetworkOutput.experts)."""
    depth_features: bool = False
    """With experts, the network also returns Meta-Expert's pooled features of every depth (NetworkOutput.depths)."""
    with_features: bool = False
    """The training forward also returns the pooled features (NetworkOutput.features)."""
    contrast_dim: int = 0
    """The network (with two_heads) also has BaCon's linear projection of this width; a forward asked for it
    (forward_options' `projection`) returns the projected features (NetworkOutput.projection)."""
    projection_heads: bool = False
    """The network (with two_heads) also has CCL's projection heads; its training forward returns
    the projected features and class centres (NetworkOutput.projection, .centres)."""
    networks: dict = {}
    """Dataset name -> the network its official code trains on it (models.ARCHS), where that is not
    the dataset's own (dataset.data.DATASETS); --arch overrides both."""
    defaults: dict = {}
    """Its own defaults of flags it shares with other methods (destination -> value), e.g. CCL's
    --tau 2.0 beside SimPro's 1.0; a run that does not pass the flag gets this one."""
    labeled_in_pool: bool = False
    """The unlabeled pool also holds the labeled images (marked in data.unlabeled_is_labeled)."""
    generation_starts: Tuple[int, ...] = ()
    """Steps at which a new generation starts (start_generation); the learning-rate schedule then
    restarts, each cycle as long as the first generation."""
    stage_starts: Tuple[int, ...] = ()
    """Steps at which the method starts a stage of its own (start_stage), e.g. CoSSL's co-learning
    after its pre-training; unlike a generation, the network, its EMA, the optimizer and the
    schedule carry on."""
    stages_change_labeled_set: bool = False
    """A stage may change the labeled set of training_data (CPG's selections): the loop then makes the
    batches again after start_stage."""

    def __init__(self, args, data, num_features: Optional[int] = None):
        """`args`: train.py's arguments; `data`: the split (dataset.data.SemiSupervisedData);
        `num_features`: the width of the network's pooled features."""
        super().__init__()

    @classmethod
    def check_arguments(cls, args) -> None:
        """Checks across its flags and the loop's (one UserError line each); single flags are
        checked by their Flag. Called before any data is read."""

    @classmethod
    def unread_settings(cls, settings: dict) -> dict:
        """The settings a run of `settings` (train.py's arguments as a dict) never reads -> why (one
        phrase). Given on the command line, such a setting is refused; off a recipe, it is not listed.
        By default what make_optimizer and the weight EMA leave unread."""
        unread = {}
        if settings.get('optimizer') == 'adam':
            unread.update(dict.fromkeys(('wdecay', 'nesterov', 'wdecay_all'), (
                f'--optimizer adam has its own weight decay ({ADAM_WEIGHT_DECAY} on every parameter, decoupled) and no '
                f'Nesterov momentum')))
        if settings.get('use_ema') is False:
            unread.update(dict.fromkeys(('ema_decay', 'ema_warmup'), '--no-use-ema trains no weight EMA'))
        return unread

    @classmethod
    def idle_parts(cls, args, steps: int) -> list:
        """What of the method never happens in a run of `steps` steps (in epochs of --eval-step), and
        why: one phrase each, for the run's first log line."""
        return []

    def view_kinds(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """The kinds of the views of each labeled and each unlabeled image, in order (what the
        batches are made of)."""
        return tuple(self.labeled_views.values()), tuple(self.unlabeled_views.values())

    def before_forward(self, images: Batch, ema_network: nn.Module) -> None:
        """Called before the step's forward pass with its images (e.g. `images.labeled.weak`) and
        the weight EMA (`ema_network`; the network itself without one)."""

    def forward_options(self) -> dict:
        """The keyword arguments of the step's forward pass: with_features, and with_projection for a
        network with BaCon's projection (from the step its contrastive loss starts)."""
        return {'with_features': self.with_features}

    def loss(self, views: Batch) -> StepResult:
        """The step's loss from the network's output on its views (e.g.
        `views.unlabeled.weak.logits`), the labels of the labeled batch (`views.labeled.labels`),
        its positions in the labeled set (`views.labeled.index`) and the pool positions of the
        unlabeled one (`views.unlabeled.index`). Its E-step (the pseudo labels) happens here."""
        raise NotImplementedError

    def end_epoch(self) -> None:
        """Called at the end of every epoch (--eval-step steps), before the evaluation."""

    def unlabeled_prior(self) -> Optional[torch.Tensor]:
        """Its current estimate of the unlabeled class distribution (logged with its KL to the
        truth); None when it keeps none."""
        return None

    def eval_logits(self, output: NetworkOutput) -> torch.Tensor:
        """The logits that are evaluated, from the network's output in eval mode."""
        return output.logits

    def metrics(self) -> dict:
        """What it logs of its own state with each evaluation (JSON values)."""
        return {}

    def start_generation(self, network: nn.Module, data, device) -> int:
        """At a step of generation_starts: update the state for the new generation from the last
        generation's `network` (its weight EMA) and the run's split, and return the seed of the new
        generation's network."""
        raise NotImplementedError(f'{type(self).__name__} has generation_starts but no start_generation')

    def start_stage(self, ema_network: nn.Module, data, device, network: nn.Module) -> str:
        """At a step of stage_starts (before that step): update the state for the stage that starts,
        from the weight EMA (the network itself without one), the network being trained and the run's
        split; return one log line on it. Its state must say which stage it is in, so that a resumed
        run carries on in it. With stages_change_labeled_set the loop then makes the batches again, of
        training_data(data)."""
        raise NotImplementedError(f'{type(self).__name__} has stage_starts but no start_stage')

    def eval_network(self, network: nn.Module) -> nn.Module:
        """The module that is evaluated (in eval mode; its output goes to eval_logits), made from the
        weight EMA (the network itself without one): by default that network."""
        return network

    def make_optimizer(self, model: nn.Module, args) -> torch.optim.Optimizer:
        """The optimizer of the network (of a fresh run and of every generation): by default the loop's
        SGD, momentum 0.9, --lr, --nesterov, --wdecay (on every parameter with --wdecay-all, else not
        on biases and BatchNorm). Multi-tensor (foreach) on every device: five operations per group and
        step instead of five per parameter, with the same numbers (PyTorch picks it itself on CUDA only)."""
        return torch.optim.SGD(param_groups(model, args.wdecay, args.wdecay_all), lr=args.lr, momentum=0.9,
                               nesterov=args.nesterov, foreach=True)

    def describe_generation(self) -> str:
        """One log line on the generation that starts."""
        return 'a new generation'

    def training_data(self, data):
        """The split the current generation or stage trains on (`data`: the run's split), a function
        of the method's state alone (a resumed run makes its batches from it)."""
        return data
