"""The methods: the small pieces of the one training loop in train.py that differ.

A method is one file with one subclass of methods.base.Method (the contract: read it first) and
one line in METHODS below, in the order of the paper's tables. What several methods share is in
methods/common.py and, for flags, methods/base.py.
"""
from dataset.data import DATASETS
from methods.acr import ACR
from methods.acr_d import ACRd
from methods.bacon import BaCon
from methods.base import Batch, Flag, Method, StepResult, Views
from methods.boat import BOAT
from methods.ccl import CCL
from methods.common import logit_adjustment, symmetric_kl
from methods.cossl import CoSSL
from methods.cpe import CPE
from methods.cpg import CPG
from methods.crest import CReSTPlus
from methods.darp import DARP
from methods.daso import DASO
from methods.fixmatch import FixMatch
from methods.metaexpert import MetaExpert
from methods.simpro import ClassPrior, SimPro, scale_ratio

METHODS = {
    'FixMatch': FixMatch,
    'DARP': DARP,
    'CReST+': CReSTPlus,
    'CoSSL': CoSSL,
    'DASO': DASO,
    'ACR_d': ACRd,
    'ACR': ACR,
    'SimPro': SimPro,
    'CCL': CCL,  # (after the paper's rows: Zhou et al., NeurIPS 2024)
    'BOAT': BOAT,  # (Gan, Wei and Zhang, arXiv 2024)
    'CPE': CPE,  # (Ma et al., AAAI 2024)
    'MetaExpert': MetaExpert,  # (Hou and Jia, ICML 2025)
    'CPG': CPG,  # (Hou et al., NeurIPS 2025)
    'BaCon': BaCon,  # (Feng et al., AAAI 2024)
}
DEFAULT_METHOD = 'SimPro'  # train.py's --version


def default_arch(version: str, dataset: str):
    """The network a run of `version` on `dataset` trains without --arch: its official code's there
    (Method.networks), else the dataset's (dataset.data.DATASETS); None for an unknown dataset."""
    method, known = METHODS.get(version), DATASETS.get(dataset)
    own = method.networks.get(dataset) if method else None
    return own or (known.arch if known else None)


def flag_readers() -> dict:
    """Every method flag (by its destination) -> (the Flag, the names of the methods that read it),
    in registry order. Two methods that read a flag of the same name must declare the same Flag."""
    readers = {}
    for name, method in METHODS.items():
        for flag in method.flags:
            known, names = readers.setdefault(flag.dest, (flag, []))
            if known != flag:
                raise TypeError(f'{name} declares {flag.name} otherwise than {names[0]}; share one Flag')
            names.append(name)
    return readers


def foreign_settings(version: str) -> set:
    """The method flags (destinations) that --version `version` does not read: a run of it neither
    stores nor compares them. Empty for a method that is not registered (every setting counts)."""
    if version not in METHODS:
        return set()
    own = {flag.dest for flag in METHODS[version].flags}
    return set(flag_readers()) - own


def own_defaults() -> dict:
    """Method flag (destination) -> {method name: its own default} for the flags that some method has
    its own default of (Method.defaults; e.g. CCL's --tau)."""
    owned = {}
    for name, method in METHODS.items():
        for dest, value in method.defaults.items():
            owned.setdefault(dest, {})[name] = value
    return owned


def fill_own_defaults(settings: dict) -> None:
    """In parsed settings, a flag of own_defaults() left out (None) takes the default of the settings'
    --version, else its Flag's."""
    method, readers = METHODS.get(settings.get('version')), flag_readers()
    for dest in own_defaults() if method else ():
        if dest in settings and settings[dest] is None:
            settings[dest] = method.defaults.get(dest, readers[dest][0].options['default'])


__all__ = ['DEFAULT_METHOD', 'METHODS', 'ACR', 'ACRd', 'Batch', 'CCL', 'ClassPrior', 'CoSSL', 'CReSTPlus', 'DARP',
           'DASO', 'FixMatch', 'Flag', 'Method', 'SimPro', 'StepResult', 'Views', 'default_arch', 'fill_own_defaults',
           'flag_readers', 'foreign_settings', 'logit_adjustment', 'own_defaults', 'scale_ratio', 'symmetric_kl']
