"""The paper's training recipes, as the launchers in sh/ run them (a test keeps the two equal).

A run follows its recipe when every setting below has the recipe's value; only such runs are
compared with the paper's numbers (utils.report), and a run off its recipe says so when it starts.
The split (gamma_l, gamma_u, mode) is the row of the table, not part of the recipe.
"""
from typing import Optional

# The settings no launcher passes: train.py's defaults, which every recipe keeps.
COMMON = {'eval_step': 500, 'wdecay': 5e-4, 'nesterov': True, 'use_ema': True, 'ema_decay': 0.999,
          'depth': None, 'widen_factor': None, 'bn_momentum': None, 'lr_schedule': 'cosine', 'wdecay_all': False,
          'ema_warmup': False}
ARCH = {'cifar10': 'wideresnet', 'cifar100': 'wideresnet', 'stl10': 'wideresnet', 'smallimagenet': 'resnet50',
        'smallimagenet_1k': 'resnet50', 'digits': 'wideresnet'}
SPLIT = {  # N1 and M1 of the tables (sh/tables.sh), where the dataset uses them
    'cifar10': {'num_max': 500, 'num_max_u': 4000}, 'cifar100': {'num_max': 50, 'num_max_u': 400},
    'stl10': {'num_max': 450}, 'smallimagenet': {}, 'smallimagenet_1k': {'num_max': 256, 'num_max_u': 1024},
    'digits': {'num_max': 20, 'num_max_u': 120}}

_SIMPRO_IMAGENET = {'lr': 0.01, 'total_steps': 250000, 'batch_size': 32, 'mu': 2, 'tau': 1.0, 'threshold': 0.2,
                    'ema_u': 0.9}
_ACR_D = {'lr': 0.03, 'total_steps': 250000, 'batch_size': 64, 'mu': 1, 'tau1': 2.0, 'tau12': 2.0, 'tau2': 2.0,
          'threshold': 0.95, 'ema_u': 0.99, 'est_epoch': 5, 'anchor_estimate': 'presence'}
_FIXMATCH = {'lr': 0.03, 'total_steps': 250000, 'batch_size': 64, 'mu': 1, 'threshold': 0.95}


_CREST_METHOD = {'threshold': 0.95, 'generations': 5, 'crest_alpha': 3.0, 'da_t_min': 0.5, 'dist_align': True}
_CREST = {**_CREST_METHOD, 'lr': 0.03, 'total_steps': 250000, 'batch_size': 64, 'mu': 2, 'lr_schedule': 'constant',
          'wdecay_all': True, 'ema_warmup': True, 'bn_momentum': 0.1}


def _daso_dist_temp(args: dict) -> float:
    """DASO's configs: T_dist 1.5 for CIFAR-10 when the unlabeled distribution is the labeled one, else 0.3."""
    same = args.get('flag_reverse_LT') == 0 and args.get('imb_ratio_unlabel') == args.get('imb_ratio_label')
    return 1.5 if args.get('dataset') == 'cifar10' and same else 0.3


_DASO_METHOD = {'threshold': 0.95, 'dist_temp': _daso_dist_temp, 'proto_temp': 0.05, 'psa_loss_weight': 1.0,
                'queue_max_size': 256}
_DASO = {**_DASO_METHOD, 'lr': 0.03, 'total_steps': 250000, 'batch_size': 64, 'mu': 2, 'lr_schedule': 'constant',
         'wdecay_all': True, 'ema_warmup': True, 'bn_momentum': 0.1, 'pretrain_steps': 5000,
         'pl_dist_update_period': 100}
# sh/tables.sh's DIGITS_RECIPE: the same short CPU recipe for every method, on top of its own
DIGITS = {'depth': 10, 'widen_factor': 1, 'bn_momentum': 0.1, 'lr': 0.1, 'total_steps': 1200, 'eval_step': 40,
          'batch_size': 8, 'mu': 6, 'ema_decay': 0.99, 'threshold': 0.95}

METHOD_RECIPES = {  # method -> dataset -> its hyper-parameters (sh/<method>.sh)
    'SimPro': {
        'cifar10': {'lr': 0.17, 'total_steps': 43000, 'batch_size': 64, 'mu': 8, 'tau': 2.0, 'threshold': 0.95,
                    'ema_u': 0.9},
        'cifar100': {'lr': 0.17, 'total_steps': 43000, 'batch_size': 64, 'mu': 8, 'tau': 1.0, 'threshold': 0.2,
                     'ema_u': 0.9},
        'stl10': {'lr': 0.17, 'total_steps': 43000, 'batch_size': 64, 'mu': 16, 'tau': 2.0, 'threshold': 0.95,
                  'ema_u': 0.9},
        'smallimagenet': _SIMPRO_IMAGENET, 'smallimagenet_1k': _SIMPRO_IMAGENET,
        'digits': {**DIGITS, 'tau': 2.0, 'ema_u': 0.9}},
    'ACR_d': {**{d: _ACR_D for d in ARCH if d != 'digits'}, 'digits': {**_ACR_D, **DIGITS}},
    'FixMatch': {**{d: _FIXMATCH for d in ARCH if d != 'digits'}, 'digits': {**_FIXMATCH, **DIGITS}},
    'ACR': {**{d: _ACR_D for d in ARCH if d != 'digits'}, 'digits': {**_ACR_D, **DIGITS}},
    'CReST+': {**{d: _CREST for d in ARCH if d not in ('digits', 'stl10')}, 'stl10': {**_CREST, 'dist_align': False},
               'digits': {**_CREST_METHOD, **DIGITS, 'generations': 3}},
    'DASO': {**{d: _DASO for d in ARCH if d != 'digits'},
             'digits': {**_DASO_METHOD, **DIGITS, 'pretrain_steps': 240, 'pl_dist_update_period': 40}},
}


def recipe(args: dict) -> Optional[dict]:
    """Every setting of the recipe of a run's method on its dataset (some depend on the run's row,
    as DASO's T_dist); None when there is none."""
    dataset = args.get('dataset')
    hyper = METHOD_RECIPES.get(args.get('version'), {}).get(dataset)
    if hyper is None:
        return None
    full = {'arch': ARCH[dataset], **COMMON, **SPLIT[dataset], **hyper}
    return {k: v(args) if callable(v) else v for k, v in full.items()}


def off_recipe(args: dict) -> Optional[list]:
    """The settings of a run (train.py's arguments as a dict) that differ from its recipe, as
    '--flag value (recipe: value)'; [] when it follows it; None when no recipe is known."""
    expected = recipe(args)
    if expected is None:
        return None
    shown = lambda value: 'default' if value is None else value  # noqa: E731 (None: the network's own)
    return [f'--{k.replace("_", "-")} {shown(args.get(k))} (recipe: {shown(v)})' for k, v in expected.items()
            if args.get(k) != v]
