"""SimPro (ICML 2024) and its ACR_d baseline for realistic long-tailed semi-supervised learning.

See the exact split of a setting before spending GPU hours:

    python train.py --dataset cifar10 --num-max 500 --num-max-u 4000 \\
        --imb-ratio-label 150 --imb-ratio-unlabel 150 --flag-reverse-LT 1 --dry-run

`--dry-run` builds the split, prints a summary and, as the last line of stdout, one JSON object.
"""
import argparse
import json
import sys

from dataset.data import DATASETS, build_data
from dataset.splits import UNLABELED_MODES
from utils.errors import UserError

METHODS = ('SimPro', 'ACR_d')


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message} (see --help)\n')


def get_args_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group('data and split')
    data.add_argument('--dataset', default='cifar10', choices=DATASETS)
    data.add_argument('--data-dir', default='./data', help='root holding cifar-10/, cifar-100/, stl-10/, small_imagenet_*/')
    data.add_argument('--download', action='store_true',
                      help='fetch CIFAR-10/100 or STL-10 with torchvision when the files are missing')
    data.add_argument('--num-max', type=int, default=500, help='N1: labeled images of the largest class')
    data.add_argument('--num-max-u', type=int, default=4000, help='M1: unlabeled images of the largest class')
    data.add_argument('--imb-ratio-label', type=float, default=1, help='gamma_l: labeled imbalance ratio (>= 1)')
    data.add_argument('--imb-ratio-unlabel', type=float, default=1,
                      help='gamma_u: unlabeled imbalance ratio (1 = uniform)')
    data.add_argument('--flag-reverse-LT', type=int, default=0, choices=sorted(UNLABELED_MODES),
                      help='unlabeled order: ' + ', '.join(f'{k} {v}' for k, v in UNLABELED_MODES.items()))
    data.add_argument('--allow-short-classes', action='store_true',
                      help='take fewer images (with a warning) when a class has fewer than the split asks for')
    data.add_argument('--img-size', type=int, default=32, help='image side: 32, or 32/64 for the ImageNet variants')
    run = p.add_argument_group('run')
    run.add_argument('--version', default='SimPro', choices=METHODS, help='method to train')
    run.add_argument('--seed', type=int, default=0, help='drives initialisation, data order and augmentation '
                                                         '(never the split)')
    run.add_argument('--dry-run', action='store_true', help='build and print the split, then exit without training')
    return p


def print_split(summary: dict, notes=()) -> None:
    """A human-readable table of the split, then the summary as one JSON line (last line of stdout)."""
    labeled, unlabeled = summary['labeled_per_class'], summary['unlabeled_per_class']
    pool, test = summary['unlabeled_pool_per_class'], summary['test_per_class']
    mode = f", unlabeled {summary['unlabeled_mode']}" if summary['unlabeled_mode'] else ''
    print(f"{summary['dataset']} for {summary['method']}: {summary['num_classes']} classes, "
          f"{summary['image_size']}x{summary['image_size']}{mode}")
    print(f"  labeled {summary['num_labeled']}, unlabeled pool {summary['num_unlabeled']}, test {summary['num_test']}")
    for note in notes:
        print(f'  note: {note}')
    shown = range(summary['num_classes'])
    if summary['num_classes'] > 20:
        shown = [*range(5), None, *range(summary['num_classes'] - 5, summary['num_classes'])]
    print(f"  {'class':>6} {'labeled':>8} {'unlabeled':>10} {'pool':>8} {'test':>6}")
    for c in shown:
        if c is None:
            print(f"  {'...':>6}")
            continue
        cell = lambda counts: '?' if counts is None else counts[c]  # noqa: E731 (unknown for STL-10)
        print(f'  {c:>6} {labeled[c]:>8} {cell(unlabeled):>10} {cell(pool):>8} {test[c]:>6}')
    print(json.dumps(summary))


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        data = build_data(args)
        if args.dry_run:
            print_split(data.summary(args.version), data.notes)
            return 0
        raise UserError('training is not available yet in this version; use --dry-run to inspect the split')
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
