"""Test-set evaluation and the numbers logged with it (SPEC section 9)."""
import numpy as np
import torch

from utils.distributed import all_reduce_sum


@torch.no_grad()
def evaluate(model, loader, eval_logits, num_classes: int, device) -> dict:
    """Top-1 and top-5 (percent) and per-class top-1 of `model` in eval mode, no adjustment,
    over the whole test set (each process evaluates its share)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros(num_classes, device=device)
    total = torch.zeros(num_classes, device=device)
    top5 = torch.zeros((), device=device)
    for images, labels, _ in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        logits = eval_logits(model(images)).float()
        best = logits.topk(min(5, num_classes), dim=1).indices
        hit1 = best[:, 0] == labels
        top5 += (best == labels.unsqueeze(1)).any(1).sum()
        correct += torch.bincount(labels[hit1], minlength=num_classes)
        total += torch.bincount(labels, minlength=num_classes)
    model.train(was_training)
    all_reduce_sum(correct, total, top5)  # each process evaluated its share of the test set
    count = total.sum().item()
    per_class = (correct / total.clamp_min(1) * 100).tolist()
    return {'top1': correct.sum().item() / count * 100, 'top5': top5.item() / count * 100,
            'per_class_acc': per_class, 'evaluated': int(count)}


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
