"""The methods: the small pieces of the one training loop in train.py that differ.

A method names the views it draws, turns the logits of one concatenated forward pass into
its loss (doing its E-step on the way), updates its state once per epoch, and says which
logits are evaluated. One file per method; a new method is one new file and one line in
METHODS below. What several methods share is in methods/common.py.
"""
from methods.acr import ACR
from methods.acr_d import ACRd
from methods.common import ClassPrior, logit_adjustment, scale_ratio, symmetric_kl
from methods.crest import CReSTPlus
from methods.daso import DASO
from methods.fixmatch import FixMatch
from methods.simpro import SimPro

METHODS = {'SimPro': SimPro, 'ACR_d': ACRd, 'FixMatch': FixMatch, 'ACR': ACR, 'DASO': DASO, 'CReST+': CReSTPlus}

__all__ = ['METHODS', 'ACR', 'ACRd', 'ClassPrior', 'CReSTPlus', 'DASO', 'FixMatch', 'SimPro', 'logit_adjustment',
           'scale_ratio', 'symmetric_kl']
