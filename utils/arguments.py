"""Checks of train.py's arguments, made right after parsing, before any data is read or anything
is written: a bad value is one line naming the flag, the value and what is allowed."""
import math

import torch

from utils.errors import UserError


def _number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# flag (argparse dest) -> (what is allowed, test); None (not given) is always allowed
RULES = {
    'batch_size': ('an integer >= 1', lambda v: v >= 1),
    'mu': ('an integer >= 1', lambda v: v >= 1),
    'eval_step': ('an integer >= 1', lambda v: v >= 1),
    'total_steps': ('an integer >= 1', lambda v: v >= 1),
    'num_max': ('an integer >= 1', lambda v: v >= 1),
    'num_max_u': ('an integer >= 1', lambda v: v >= 1),
    'imb_ratio_label': ('a finite number >= 1 (1 means balanced)', lambda v: _number(v) and v >= 1),
    'imb_ratio_unlabel': ('a finite number >= 1 (1 means uniform)', lambda v: _number(v) and v >= 1),
    'threshold': ('a number in [0, 1]', lambda v: _number(v) and 0 <= v <= 1),
    'lr': ('a finite number > 0', lambda v: _number(v) and v > 0),
    'wdecay': ('a finite number >= 0', lambda v: _number(v) and v >= 0),
    'ema_decay': ('a number in [0, 1]', lambda v: _number(v) and 0 <= v <= 1),
    'ema_u': ('a number in [0, 1]', lambda v: _number(v) and 0 <= v <= 1),
    'bn_momentum': ('a number in [0, 1]', lambda v: _number(v) and 0 <= v <= 1),
    'tau': ('a finite number', _number),
    'tau1': ('a finite number', _number),
    'tau12': ('a finite number', _number),
    'tau2': ('a finite number', _number),
    'est_epoch': ('an integer >= 0', lambda v: v >= 0),
    'num_workers': ('an integer >= 0', lambda v: v >= 0),
    'seed': ('an integer in 0..2**32-1', lambda v: 0 <= v < 2 ** 32),
    'depth': ('an integer >= 1', lambda v: v >= 1),
    'widen_factor': ('an integer >= 1', lambda v: v >= 1),
    # DASO
    'dist_temp': ('a finite number > 0', lambda v: _number(v) and v > 0),
    'proto_temp': ('a finite number > 0', lambda v: _number(v) and v > 0),
    'pretrain_steps': ('an integer >= 0', lambda v: v >= 0),
    'pl_dist_update_period': ('an integer >= 1', lambda v: v >= 1),
    'psa_loss_weight': ('a finite number >= 0', lambda v: _number(v) and v >= 0),
    'queue_max_size': ('an integer >= 1', lambda v: v >= 1),
}
DEVICE_TYPES = ('cpu', 'cuda')


def check_arguments(args) -> None:
    """Raise UserError for the first argument outside its allowed range (see RULES) or a device that
    is neither a CPU nor a CUDA GPU. (The image size is checked by dataset.data.build_data and the
    network by building it on the meta device, both before any data is read.)"""
    for name, (allowed, valid) in RULES.items():
        value = getattr(args, name, None)
        if value is not None and not valid(value):
            raise UserError(f'--{name.replace("_", "-")} {value:g} is not allowed; use {allowed}')
    if args.device is not None:
        try:
            kind = torch.device(args.device).type
        except RuntimeError:
            kind = None
        if kind not in DEVICE_TYPES:
            raise UserError(f'--device {args.device} is not a device to train on; use cpu, cuda or cuda:<index>')
