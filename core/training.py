"""What a run trains and how, for every method: the network, its weight EMA, the optimizer and the
learning-rate schedule (`Training`, made by `build_training`), seeding and the RNG states, and the
compiled step (--compile). The step itself is train.py's `learn`."""
import math
import random
from copy import deepcopy
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from methods import METHODS, Method
from models import build_model
from utils import distributed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states() -> dict:
    states = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def cosine_schedule(total_steps: int):
    """lr multiplier at step t: max(0, cos(7 pi t / (16 T))) (FixMatch's schedule, warmup 0)."""
    return lambda step: max(0.0, math.cos(math.pi * 7 / 16 * step / max(1, total_steps)))


def constant_schedule(step: int) -> float:
    """lr multiplier 1 at every step (DASO's recipe)."""
    return 1.0


class ModelEMA:
    """Exponential moving average of the weights (decay 0.999); buffers (BatchNorm statistics)
    are copied, not averaged, as FixMatch-pytorch's ModelEMA."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = False, on_device: bool = False):
        self.model = deepcopy(model).eval()
        self.decay, self.warmup = decay, warmup
        for p in self.model.parameters():
            p.requires_grad_(False)
        # (a compiled step reads the decay from the device, so that its code is the same at every step)
        self.decay_on_device = torch.zeros((), device=next(model.parameters()).device) if on_device else None
        if on_device:
            torch._dynamo.mark_static_address(self.decay_on_device)  # (read where it is by CUDA graphs)

    def decay_after(self, step: int):
        """The decay of the update after step `step` (1-based): --ema-decay, or with warm-up (DASO's)
        min(1 - 1/step, --ema-decay); with on_device, written into a tensor on the device (no wait)."""
        decay = min(1 - 1 / step, self.decay) if self.warmup else self.decay
        return decay if self.decay_on_device is None else self.decay_on_device.fill_(decay)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, decay) -> None:
        """ema = decay * ema + (1 - decay) * weight, then buffers copied: three foreach operations.
        `decay` is a number, or (in a compiled step, whose code must not change from step to step)
        a tensor on the device holding it."""
        ema_params, params = list(self.model.parameters()), list(model.parameters())
        torch._foreach_mul_(ema_params, decay)
        if isinstance(decay, torch.Tensor):
            torch._foreach_add_(ema_params, torch._foreach_mul(params, 1 - decay))
        else:
            torch._foreach_add_(ema_params, params, alpha=1 - decay)
        torch._foreach_copy_(list(self.model.buffers()), list(model.buffers()))


def learning_rate_on_device(optimizer: torch.optim.Optimizer, on_device: bool) -> None:
    """Hold each parameter group's learning rate as a tensor on its parameters' device (a compiled
    step reads it there, so that its code does not change with the schedule, which fills it in
    place; Adam then keeps its step counts there too: capturable), or as a number (the eager step)."""
    for group in optimizer.param_groups:
        if not group['params']:  # (an empty group: DASO's groups with weight decay on every parameter)
            continue
        device, lr = group['params'][0].device, group['lr']
        if not on_device:
            group['lr'] = float(lr)
        elif not (isinstance(lr, torch.Tensor) and lr.device == device):
            group['lr'] = torch.tensor(float(lr), device=device)
        if 'capturable' in group:
            group['capturable'] = on_device
            for p in group['params']:
                state = optimizer.state.get(p, {})
                if 'step' in state:
                    state['step'] = state['step'].to(device if on_device else 'cpu', torch.float32)


def compile_step(step, optimizer: torch.optim.Optimizer, device: torch.device):
    """`step` (train.learn) torch.compile'd for --compile, on CUDA as CUDA graphs (mode reduce-overhead),
    with what that needs: the learning rate read from the device (the schedule fills it in place, so
    the step's code never changes), the optimizer's step traceable, a method's step counter on the host
    an input of the compiled step rather than a constant of it (one compiled step per branch the
    method takes on it, not one per value), and the compiled code of an earlier run or generation
    dropped (no limit on recompiles is reached)."""
    learning_rate_on_device(optimizer, True)
    _traceable_step(optimizer)
    torch._dynamo.reset()
    torch._dynamo.config.allow_unspec_int_on_nn_module = True
    return torch.compile(step, mode='reduce-overhead' if device.type == 'cuda' else None)


def _traceable_step(optimizer: torch.optim.Optimizer) -> None:
    """The learning-rate scheduler wraps optimizer.step in a function that records the call (for a
    warning), in a file torch.compile does not trace into; the same wrapper here, which it does."""
    step = type(optimizer).step

    def recorded_step(*args, **kwargs):
        optimizer._opt_called = True
        return step(optimizer, *args, **kwargs)
    recorded_step._wrapped_by_lr_sched = True
    optimizer.step = recorded_step


def new_model(args, num_classes: int) -> torch.nn.Module:
    """The network of the run's --arch and --version (its heads), with --depth, --widen-factor, --bn-momentum."""
    method = METHODS[args.version]
    return build_model(args.arch, num_classes, two_heads=method.two_heads, depth=args.depth,
                       widen_factor=args.widen_factor, bn_momentum=args.bn_momentum,
                       projection=method.projection_heads, experts=method.experts,
                       depth_features=method.depth_features, contrast_dim=method.contrast_dim)


@dataclass
class Training:
    """What a step updates and a checkpoint holds (with the step, the history and the RNG states)."""
    method: Method
    model: torch.nn.Module
    ema: Optional[ModelEMA]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    forward: Callable  # the model (wrapped for DistributedDataParallel under several processes)
    step: Callable  # the step (train.learn): Training.learn is it, or it torch.compile'd with `compiled`
    compiled: bool = False

    def __post_init__(self):  # (the step unbound: a run that referred to itself would outlive its process group)
        self.learn = compile_step(self.step, self.optimizer, next(self.model.parameters()).device) \
            if self.compiled else self.step

    def state_dict(self) -> dict:
        return {'model': self.model.state_dict(), 'ema': self.ema.model.state_dict() if self.ema else None,
                'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict(),
                'method': self.method.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state['model'])
        if self.ema:
            self.ema.model.load_state_dict(state['ema'])
        how = [{k: group[k] for k in ('foreach', 'fused') if k in group} for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state['optimizer'])
        for group, options in zip(self.optimizer.param_groups, how):  # how it computes stays the code's
            group.update(options)
        learning_rate_on_device(self.optimizer, self.compiled)
        self.scheduler.load_state_dict(state['scheduler'])
        self.method.load_state_dict(state['method'])


def build_training(args, data, device, step: Callable, method=None, seed=None) -> Training:
    """The method, the network, its weight EMA, the optimizer and the schedule of a fresh run (or of
    a new generation: its method carries on, the network is drawn from the generation's seed), and
    the `step` that trains them (train.learn; compiled with --compile)."""
    seed_everything(args.seed if seed is None else seed)
    model = new_model(args, data.num_classes).to(device)
    if method is None:  # (after the network: a method's own random draws never move its initialisation)
        method = METHODS[args.version](args, data, num_features=model.num_features).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = method.make_optimizer(model, args)  # (the loop's SGD, unless the method has its own)
    starts = method.generation_starts  # the schedule restarts with every generation, each as long as the first
    cycle = starts[0] if starts else args.total_steps
    schedule = cosine_schedule(cycle) if args.lr_schedule == 'cosine' else constant_schedule
    forward = model
    if distributed.world_size() > 1:  # gradients averaged over the processes; static graph: the WRN has a
        # BatchNorm without gradient; BaCon's projection joins the graph when its contrastive loss starts
        forward = DistributedDataParallel(model, find_unused_parameters=True) if method.contrast_dim else \
            DistributedDataParallel(model, static_graph=True)
    ema = ModelEMA(model, args.ema_decay, args.ema_warmup, on_device=args.compile) if args.use_ema else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return Training(method, model, ema, optimizer, scheduler, forward, step, compiled=args.compile)
