"""Checks of train.py's arguments, made right after parsing, before any data is read or anything
is written: a bad value is one line naming the flag, the value and what is allowed. The loop's
flags are checked here (RULES), a method's flags by their own Flag and the method's
check_arguments (methods/base.py)."""
import math
import re
from pathlib import Path

import torch

from core.settings import unread_settings
from core.training import new_model
from dataset.data import DATASETS
from methods import METHODS, default_arch, flag_readers
from models import ModelConfigError
from methods.base import finite
from utils import distributed
from utils.cli import unwritable
from utils.errors import UserError


# the loop's flag (argparse dest) -> (what is allowed, test); None (not given) is always allowed
RULES = {
    'batch_size': ('an integer >= 1', lambda v: v >= 1),
    'mu': ('an integer >= 1', lambda v: v >= 1),
    'eval_step': ('an integer >= 1', lambda v: v >= 1),
    'total_steps': ('an integer >= 1', lambda v: v >= 1),
    'num_max': ('an integer >= 1', lambda v: v >= 1),
    'num_max_u': ('an integer >= 1', lambda v: v >= 1),
    'imb_ratio_label': ('a finite number >= 1 (1 means balanced)', lambda v: finite(v) and v >= 1),
    'imb_ratio_unlabel': ('a finite number >= 1 (1 means uniform)', lambda v: finite(v) and v >= 1),
    'lr': ('a finite number > 0', lambda v: finite(v) and v > 0),
    'wdecay': ('a finite number >= 0', lambda v: finite(v) and v >= 0),
    'ema_decay': ('a number in [0, 1]', lambda v: finite(v) and 0 <= v <= 1),
    'bn_momentum': ('a number in [0, 1]', lambda v: finite(v) and 0 <= v <= 1),
    'num_workers': ('an integer >= 0', lambda v: v >= 0),
    'seed': ('an integer in 0..2**32-1', lambda v: 0 <= v < 2 ** 32),
    'depth': ('an integer >= 1', lambda v: v >= 1),
    'widen_factor': ('an integer >= 1', lambda v: v >= 1),
}
DEVICE_TYPES = ('cpu', 'cuda')


def check_arguments(args, given=None) -> None:
    """Raise UserError for a flag of another method among the flags `given` on the command line
    (destinations), a number flag that is not finite (inf, nan: every one, here), the first
    argument outside its allowed range (RULES, the method's Flags), a
    device that is neither a CPU nor a CUDA GPU, what the method's check_arguments refuses, or
    torchrun's variables that cannot form a process group (utils.distributed.check_environment).
    (The image size is checked by dataset.data.build_data and the network by building it on the
    meta device, both before any data is read.) A refused value the command line did not give (a
    flag left at its default, when `given` is known) is named as the default."""
    distributed.check_environment()  # (torchrun's variables, where set: before they are read)
    try:
        check_values(args, given or ())
    except UserError as e:
        raise UserError(named_default(str(e), given)) from None
    check_run_paths(args)


def named_default(message: str, given) -> str:
    """'--flag value is not allowed; ...' with ' (its default; pass --flag to change it)' after the
    value when `given` (the destinations of the flags given) does not hold the flag."""
    match = re.match(r'(--[\w-]+) (?!is )(\S+) ', message)  # (a flag and its value; '--flag is ...' names no value)
    if given is None or not match or match.group(1)[2:].replace('-', '_') in given:
        return message
    flag, value = match.groups()
    return f'{flag} {value} (its default; pass {flag} to change it) {message[match.end():]}'


def check_values(args, given) -> None:
    """check_arguments' checks of the values, in its order."""
    check_method_flags(args.version, given)
    check_unread(vars(args), given)
    method = METHODS[args.version]
    rules = {**RULES, **{f.dest: (f.allowed, f.valid) for f in method.flags if f.valid is not None}}
    for name, (allowed, valid) in rules.items():
        value = getattr(args, name, None)
        if value is not None and not valid(value):
            shown = value if isinstance(value, (int, str)) else f'{value:g}'  # (as typed: 4294967296, not 4.29e+09)
            raise UserError(f'--{name.replace("_", "-")} {shown} is not allowed; use {allowed}')
    for name, value in vars(args).items():  # (every number flag, those without a rule of their own too)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f'--{name.replace("_", "-")} {value} is not allowed; use a finite number')
    if args.device is not None:
        try:
            kind = torch.device(args.device).type
        except RuntimeError:
            kind = None
        if kind not in DEVICE_TYPES:
            raise UserError(f'--device {args.device} is not a device to train on; use cpu, cuda or cuda:<index>')
    method.check_arguments(args)


def check_run_paths(args) -> None:
    """The device, --resume and --out, as far as they can be checked before any data is read."""
    if args.device is not None and torch.device(args.device).type == 'cuda':
        index = torch.device(args.device).index or 0
        if not torch.cuda.is_available():
            raise UserError(f'--device {args.device} is not usable here (no CUDA GPU is visible); use --device cpu')
        if index >= torch.cuda.device_count():
            raise UserError(f'--device {args.device} is not usable here ({torch.cuda.device_count()} CUDA GPUs are '
                            f'visible); use cuda:0..cuda:{torch.cuda.device_count() - 1}')
    if args.resume not in (None, 'auto'):
        path = Path(args.resume)
        if not (path.is_file() or (path / 'checkpoint.pt').is_file()):
            raise UserError(f'--resume {args.resume}: no checkpoint there')
    if args.out is not None and (why := unwritable('--out', args.out)):
        raise UserError(why)


def check_method_flags(version: str, given) -> None:
    """A flag that only other methods read, given on the command line, is refused: it would
    change nothing, silently."""
    readers = flag_readers()
    for dest in given:
        if dest in readers and version not in readers[dest][1]:
            flag, names = readers[dest]
            owner = f'a {names[0]} flag' if len(names) == 1 else f'a flag of {", ".join(names[:-1])} and {names[-1]}'
            raise UserError(f'{flag.name} is {owner}; --version {version} does not read it')


def check_unread(settings: dict, given) -> None:
    """A setting given on the command line that the run never reads (core.settings.unread_settings:
    its dataset does not use it, or its method's configuration leaves it unread) is refused: it
    would change nothing, silently."""
    unread = unread_settings(settings)
    dest = next((name for name in settings if name in unread and name in given), None)  # (the first, in flag order)
    if dest is not None:
        flag = f'--{"no-" if settings[dest] is False else ""}{dest.replace("_", "-")}'
        raise UserError(f'{flag} is not read: {unread[dest]}; drop it')


def check_before_data(args, given=None) -> None:
    """Every check of train.py's arguments that reads no data, in order: check_arguments, then the
    network (its default for the method and dataset filled in as args.arch) built on the meta device."""
    check_arguments(args, given)
    args.arch = args.arch or default_arch(args.version, args.dataset)
    check_network(args)


def check_network(args) -> None:
    """Build the network on the meta device (no memory, no time): a bad --depth or --widen-factor
    fails here, before any data is read."""
    try:
        with torch.device('meta'):
            new_model(args, DATASETS[args.dataset].num_classes)
    except ModelConfigError as e:
        sizes = (('--depth', args.depth), ('--widen-factor', args.widen_factor))
        given = ' '.join(f'{flag} {value}' for flag, value in sizes if value is not None)
        raise UserError(f'--arch {args.arch}{" " + given if given else ""}: {e}')
