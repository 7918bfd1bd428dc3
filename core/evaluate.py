"""Test-set evaluation and the numbers logged with it (README, "Outputs").

A split has one main test set ('test': top1, best_top1, mean20_top1, ... of metrics.jsonl) and may
have others (dataset.data.SemiSupervisedData.test_sets; ImageNet-127's 'imbalanced_test', every val
image), each logged under its own name. One pass over the images of the sets due evaluates them all.
"""
import numpy as np
import torch

from dataset.data import MAIN_TEST
from utils.distributed import all_reduce_sum, rank, world_size

LAST_EVALUATIONS = 20  # the paper's tables report the mean of the last 20 evaluations
OTHER_TEST_EVERY = 10  # epochs between evaluations of a test set other than the main one (also in
# each of the last LAST_EVALUATIONS epochs, so that its mean20 is that of the last 20 epochs)


def due_test_sets(test_sets: dict, epoch: int, last_epoch: int) -> list:
    """The names of the test sets evaluated after `epoch` (1, 2, ... last_epoch): the main one every
    epoch, each other one every OTHER_TEST_EVERY epochs and in each of the last 20. (ImageNet-127's
    every val image takes about 19% of an epoch's time, its balanced subset 2.4%: tools/bench_eval.)"""
    other = epoch % OTHER_TEST_EVERY == 0 or epoch > last_epoch - LAST_EVALUATIONS
    return [name for name in test_sets if name == MAIN_TEST or other]


def evaluate_sets(model, test_batches, test_sets: dict, due: list, eval_logits, num_classes: int, device) -> dict:
    """{name: evaluate's result} for the test sets named in `due`, from one pass over the rows they
    cover; `test_batches(rows)`: this process's share of those rows of the test images, in order."""
    rows = test_sets[due[0]] if len(due) == 1 else np.unique(np.concatenate([test_sets[n] for n in due]))
    mine = rows[rank()::world_size()]
    members = {name: torch.from_numpy(np.isin(mine, test_sets[name])).to(device) for name in due}
    return evaluate(model, test_batches(rows), eval_logits, num_classes, device, members)


@torch.no_grad()
def evaluate(model, loader, eval_logits, num_classes: int, device, members=None) -> dict:
    """Top-1 and top-5 (percent) and per-class top-1 of `model` in eval mode, no adjustment, over
    the whole test set (each process evaluates its share). `members`: {test set name: (images,) bool,
    which of the loader's images in order belong to it}: then {name: that set's numbers}."""
    sets = {MAIN_TEST: None} if members is None else members
    was_training = model.training
    model.eval()
    correct = {name: torch.zeros(num_classes, device=device) for name in sets}
    total = {name: torch.zeros(num_classes, device=device) for name in sets}
    top5 = {name: torch.zeros((), device=device) for name in sets}
    seen = 0
    for images, labels, _ in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        logits = eval_logits(model(images)).float()
        best = logits.topk(min(5, num_classes), dim=1).indices
        hit1, hit5 = best[:, 0] == labels, (best == labels.unsqueeze(1)).any(1)
        for name, member in sets.items():
            inside = slice(None) if member is None else member[seen:seen + len(labels)]
            top5[name] += hit5[inside].sum()
            correct[name] += torch.bincount(labels[inside][hit1[inside]], minlength=num_classes)
            total[name] += torch.bincount(labels[inside], minlength=num_classes)
        seen += len(labels)
    model.train(was_training)
    results = {}
    for name in sets:
        all_reduce_sum(correct[name], total[name], top5[name])  # each process evaluated its share
        count = total[name].sum().item()
        results[name] = {'top1': correct[name].sum().item() / count * 100, 'top5': top5[name].item() / count * 100,
                         'per_class_acc': (correct[name] / total[name].clamp_min(1) * 100).tolist(),
                         'evaluated': int(count)}
    return results[MAIN_TEST] if members is None else results


def new_history(test_sets: dict) -> dict:
    """The top-1 of every evaluation so far and the best: the main test set's at the top level (as
    checkpoints of earlier versions hold it), each other one's under its name."""
    return {'top1': [], 'best_top1': 0.0, **{name: {'top1': [], 'best_top1': 0.0} for name in test_sets
                                             if name != MAIN_TEST}}


def add_to_history(history: dict, tested: dict) -> bool:
    """Add an evaluation's top-1 of each set tested; whether the main one is the best so far."""
    is_best = tested[MAIN_TEST]['top1'] > history['best_top1']
    for name, result in tested.items():
        past = history if name == MAIN_TEST else history.setdefault(name, {'top1': [], 'best_top1': 0.0})
        past['top1'].append(result['top1'])
        past['best_top1'] = max(past['best_top1'], result['top1'])
    return is_best


def test_set_record(result: dict, past: dict, groups: dict) -> dict:
    """A test set's numbers in a metrics.jsonl line: top1, top5, best and mean of the last 20
    evaluations, per-class top-1 and its mean per group of classes, the images evaluated."""
    last = past['top1'][-LAST_EVALUATIONS:]
    return {'top1': result['top1'], 'top5': result['top5'], 'best_top1': past['best_top1'],
            'mean20_top1': sum(last) / len(last), 'per_class_acc': result['per_class_acc'],
            'group_acc': group_accuracy(result['per_class_acc'], groups), 'evaluated': result['evaluated']}


def shot_groups(labeled_per_class) -> dict:
    """Classes split into thirds by labeled training count (ties by class id): many, medium, few.

    The original grouped by test counts, which puts every class of a balanced test set in
    one group; labeled counts are what the groups are meant to describe.
    """
    order = sorted(range(len(labeled_per_class)), key=lambda c: (-labeled_per_class[c], c))
    many, medium, few = np.array_split(np.array(order), 3)
    return {'many': many.tolist(), 'medium': medium.tolist(), 'few': few.tolist()}


def group_accuracy(per_class_acc, groups: dict) -> dict:
    return {name: float(np.mean([per_class_acc[c] for c in classes])) if len(classes) else None
            for name, classes in groups.items()}
