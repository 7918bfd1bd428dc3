"""The batches a run trains on and the test batches it evaluates: made on the device (`--aug gpu`,
dataset/device_batches.py) or per image with PIL in DataLoader workers (`--aug cpu`,
dataset/augment.py), the same pixels either way, in the order of dataset.sampler.PassBatches."""
import torch

from dataset.device_batches import DeviceBatches, EvalBatches, to_device
from dataset.sampler import PassBatches
from utils import distributed
from utils.errors import UserError


def strong_kind(args) -> str:
    """The view kind of a method's strong views: FixMatch's RandAugmentMC (--randaugment fixmatch) or
    USB's RandAugment (usb)."""
    return 'strong_usb' if args.randaugment == 'usb' else 'strong'


def make_batches(args, data, views, step: int, device):
    """Endless batches positioned at `step`, and test_batches(rows): this process's share of those rows
    of the test images, in order. The views of a batch are made on the device (--aug gpu) or per
    image with PIL in loader workers (--aug cpu); batches.views(batch) gives its (labeled batch,
    unlabeled batch) pair: the batch itself, or with --compile and views of fixed shapes, the views
    made on the device from the batch's plan (in the compiled step). `data`: the split to train on
    (a generation's own, for a self-training method); `views`: the kinds of the views of each
    labeled and each unlabeled image, in order (dataset.augment.VIEW_KINDS; a 'strong' one is
    strong_kind(args): USB's with --randaugment usb)."""
    labeled_views, unlabeled_views = ([strong_kind(args) if kind == 'strong' else kind for kind in side]
                                      for side in views)
    common = dict(seed=args.seed, start=step, rank=distributed.rank(), world_size=distributed.world_size())
    share = slice(distributed.rank(), None, distributed.world_size())  # of the test rows, to evaluate
    if args.aug == 'gpu':
        try:
            images = to_device(data.images, device)
            test_images, test_labels = to_device(data.test_images, device), torch.from_numpy(data.test_labels)
        except torch.cuda.OutOfMemoryError:
            raise UserError(f"the split's {data.images.nbytes / 2 ** 30:.1f} GiB of images do not fit on {device}; "
                            f"use --aug cpu")

        def test_batches(rows):
            mine = torch.from_numpy(rows[share])
            return EvalBatches(test_images, test_labels[mine].to(device), data.mean, data.std, rows=mine.to(device))
        return (DeviceBatches(images, torch.from_numpy(data.labels), data.labeled_idx, data.unlabeled_idx,
                              labeled_views, unlabeled_views, args.batch_size, args.mu, mean=data.mean,
                              std=data.std, flip=data.flip, cutout=data.cutout, planned=args.compile,
                              labeled_targets=torch.from_numpy(data.labeled_targets), **common),
                test_batches)
    labeled_set, unlabeled_set, test_set = data.datasets(labeled_views, unlabeled_views)

    def endless(dataset, batch_size, stream, what):
        sampler = PassBatches(len(dataset), batch_size, stream=stream, what=what, **common)
        return iter(torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=args.num_workers,
                                                pin_memory=device.type == 'cuda',
                                                persistent_workers=args.num_workers > 0))

    return (LoaderBatches(endless(labeled_set, args.batch_size, 0, 'labeled set'),
                          endless(unlabeled_set, args.batch_size * args.mu, 1, 'unlabeled pool')),
            lambda rows: torch.utils.data.DataLoader(torch.utils.data.Subset(test_set, rows[share].tolist()),
                                                     batch_size=256, num_workers=args.num_workers))


class LoaderBatches:
    """The PIL path's (labeled batch, unlabeled batch) pairs from its two DataLoaders."""

    def __init__(self, labeled, unlabeled):
        self.pairs = zip(labeled, unlabeled)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.pairs)

    @staticmethod
    def views(batch):
        return batch  # (a pair already holds its views)
