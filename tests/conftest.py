"""Shared fixtures: fake datasets in the official formats, written once per test session."""
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from methods import Batch  # noqa: E402
from models import NetworkOutput  # noqa: E402
from tools import fake_data  # noqa: E402

# How long a subprocess a test waits for may run before it counts as hung: a bound on a failure (a
# process that never ends), never a measure of speed, so generous enough for a slow, loaded machine.
HANG_LIMIT = 3600


@pytest.fixture(scope='session')
def cifar10_root(tmp_path_factory):
    """A CIFAR-10 with the official 5,000 train and 1,000 test images per class."""
    return fake_data.write_cifar(tmp_path_factory.mktemp('cifar10'), 10)


@pytest.fixture(scope='session')
def cifar100_root(tmp_path_factory):
    """A CIFAR-100 with the official 500 train and 100 test images per class."""
    return fake_data.write_cifar(tmp_path_factory.mktemp('cifar100'), 100, 500)


@pytest.fixture(scope='session')
def small_cifar10_root(tmp_path_factory):
    """A small CIFAR-10 (60 train, 5 test per class) for quick checks."""
    return fake_data.write_cifar(tmp_path_factory.mktemp('small_cifar10'), 10, 60, 5)


@pytest.fixture(scope='session')
def cifar10_launcher_root(tmp_path_factory):
    """A CIFAR-10 with enough train images for every launcher row (5,000 per class, as the real one) and a
    small test set (20 per class), so short training runs evaluate quickly."""
    return fake_data.write_cifar(tmp_path_factory.mktemp('cifar10_launcher'), 10, 5000, 20)


def step_views(method, output, y, u_index, x_index=None) -> Batch:
    """What a method's loss reads of a hand-made step: the network's `output` on every row (the
    labeled views' rows, then the unlabeled views'; the logits alone, or a NetworkOutput or a tuple
    of its fields in order), the labeled batch's classes `y`, the unlabeled batch's pool positions
    `u_index` and the labeled batch's positions in the labeled set `x_index`."""
    if not isinstance(output, NetworkOutput):
        output = NetworkOutput(*output) if isinstance(output, tuple) else NetworkOutput(output)
    return Batch.of(method, output, torch.as_tensor(y), torch.as_tensor(u_index),
                    None if x_index is None else torch.as_tensor(x_index))
