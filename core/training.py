"""Pieces of the training loop that every method shares: seeding, the RNG states, the
optimizer groups, the learning-rate schedule, the weight EMA (SPEC section 5) and the compiled step
(--compile)."""
import math
import random
from copy import deepcopy

import numpy as np
import torch


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
