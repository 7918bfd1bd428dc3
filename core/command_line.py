"""train.py's command line: its parser (the loop's flags and every method's, each method's in the
group of the methods that read it) and which flags a command line gave. The checks of the values
are core/arguments.py's."""
import argparse

from core.recipes import ROOT, launcher
from dataset.data import DATASETS
from dataset.splits import UNLABELED_MODES
from methods import DEFAULT_METHOD, METHODS, fill_own_defaults, flag_readers, own_defaults
from models import ARCHS
from utils.cli import HelpFormatter, OneLineParser

DESCRIPTION = 'Realistic long-tailed semi-supervised learning: one training loop for every method.'


def epilog() -> str:
    launchers = ', '.join(str(launcher(name).relative_to(ROOT)) for name in METHODS)
    return (f"The paper's recipes are the launchers: bash sh/{DEFAULT_METHOD}.sh <dataset> <row>, one per method "
            f"({launchers}; a bad row lists the rows). The defaults above are the original parser's (lr 0.03, "
            f"250,000 steps, mu 1), not a paper recipe; a run off its paper recipe says so in its first log line.")


class TrainParser(OneLineParser):
    """train.py's parser: a method flag that a method has its own default of (Method.defaults)
    parses to None when left out, then takes the default of the run's --version."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, rest = super().parse_known_args(args, namespace)
        fill_own_defaults(vars(namespace))
        return namespace, rest


def get_args_parser() -> argparse.ArgumentParser:
    p = TrainParser(prog='train.py', description=DESCRIPTION, formatter_class=HelpFormatter, epilog=epilog())
    data = p.add_argument_group('data and split')
    data.add_argument('--dataset', default='cifar10', choices=tuple(DATASETS))
    data.add_argument('--data-dir', default='./data',
                      help='root holding cifar-10/, cifar-100/, stl-10/, small_imagenet_*/')
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
    data.add_argument('--img-size', type=int, help='image side (default: 32; 16 for digits); 64 too for the '
                                                   'ImageNet variants')
    data.add_argument('--num-workers', type=int, default=4, help='data-loading processes')

    method = p.add_argument_group('method')
    method.add_argument('--version', default=DEFAULT_METHOD, choices=tuple(METHODS),
                        help='method to train (methods/; its own flags follow in their groups)')
    method.add_argument('--arch', choices=ARCHS,
                        help="network (default: the one the method's official code trains on the dataset, "
                             "Method.networks: wideresnet_daso for FixMatch, DARP, CReST+ and DASO on CIFAR and "
                             "STL-10, wideresnet_cossl for CoSSL there; else the dataset's, dataset.data.DATASETS: "
                             "wideresnet for CIFAR/STL-10/digits, resnet50 for ImageNet)")
    method.add_argument('--depth', type=int, help='WideResNet/ResNeXt depth (default 28; e.g. 10 for quick runs)')
    method.add_argument('--widen-factor', type=int, help='WideResNet widen factor / ResNeXt width (default 2)')
    method.add_argument('--randaugment', choices=('fixmatch', 'usb'), default='fixmatch',
                        help="the RandAugment of the strong views: FixMatch's RandAugmentMC(2, 10) with a 16-pixel "
                             "cutout (kekmodel/FixMatch-pytorch, as SimPro's and ACR's code) or USB's "
                             "RandAugment(3, 5) with its random cutout (the USB protocol rows of the launchers)")
    method.add_argument('--bn-momentum', type=float, help="BatchNorm momentum (default: the network's own: "
                                                          "0.001 for wideresnet and wideresnet_usb, 0.1 for "
                                                          "wideresnet_daso, wideresnet_cossl and resnet50)")
    add_method_flags(p, method)

    optim = p.add_argument_group('optimisation')
    optim.add_argument('--lr', type=float, default=0.03, help='initial learning rate')
    optim.add_argument('--wdecay', type=float, default=5e-4, help='weight decay (not on biases and BatchNorm)')
    optim.add_argument('--nesterov', action=argparse.BooleanOptionalAction, default=True, help='Nesterov momentum')
    optim.add_argument('--total-steps', type=int, default=250000, help='T of the cosine schedule')
    optim.add_argument('--eval-step', type=int, default=500, help='steps per epoch: evaluation and prior update')
    optim.add_argument('--batch-size', type=int, default=64, help='labeled batch B (unlabeled: mu * B)')
    optim.add_argument('--mu', type=int, default=1, help='unlabeled to labeled batch ratio')
    optim.add_argument('--use-ema', action=argparse.BooleanOptionalAction, default=True,
                       help='evaluate an EMA of the weights')
    optim.add_argument('--ema-decay', type=float, default=0.999, help='decay of the weight EMA')
    optim.add_argument('--lr-schedule', choices=('cosine', 'constant'), default='cosine',
                       help="cosine: lr cos(7 pi t / 16 T) after step t of T; constant: no decay")
    optim.add_argument('--wdecay-all', action=argparse.BooleanOptionalAction, default=False,
                       help="weight decay on every parameter, biases and BatchNorm included")
    optim.add_argument('--ema-warmup', action=argparse.BooleanOptionalAction, default=False,
                       help="weight EMA decay min(1 - 1/t, --ema-decay) after step t")

    run = p.add_argument_group('run')
    run.add_argument('--seed', type=int, default=0, help='drives initialisation, data order and augmentation '
                                                         '(never the split)')
    run.add_argument('--out', help='output directory (default: result/<dataset>/<every setting>)')
    run.add_argument('--resume', help='a checkpoint or run directory to continue; "auto": the checkpoint in '
                                      '--out if there is one, else a fresh start')
    run.add_argument('--device', help='cuda, cuda:1, cpu, ... (default: cuda when available)')
    run.add_argument('--no-progress', action='store_true', help='no progress bar, periodic lines only')
    run.add_argument('--tensorboard', action='store_true',
                     help='also write the metrics for TensorBoard under <out>/tensorboard (pip install tensorboard)')
    speed = p.add_argument_group('speed')
    speed.add_argument('--aug', choices=('gpu', 'cpu'),
                       help='gpu: the split as one uint8 tensor on the device and batched augmentation there '
                            '(equal to the PIL path); cpu: per-image PIL in loader workers '
                            '(default: gpu on CUDA when the images take at most a quarter of its memory, '
                            'else cpu)')
    speed.add_argument('--amp', action='store_true', help='bfloat16 autocast on CUDA (ignored on the CPU)')
    speed.add_argument('--channels-last', action=argparse.BooleanOptionalAction,
                       help='channels-last memory format (default: on with CUDA)')
    speed.add_argument('--compile', action='store_true',
                       help='torch.compile the whole training step (the views made on the device, forward, backward, '
                            'optimizer, weight EMA); on CUDA as CUDA graphs (mode reduce-overhead)')
    run.add_argument('--dry-run', action='store_true', help='build and print the split, then exit without training')
    return p


def add_method_flags(parser, shared_group) -> None:
    """Every method's flags (methods/base.py: Method.flags), each in the group of the methods that
    read it; one that every method reads joins `shared_group`."""
    groups, owned_defaults = {}, own_defaults()
    for flag, readers in flag_readers().values():
        if readers == list(METHODS):
            group = shared_group
        else:
            title = ', '.join(readers)
            if title not in groups:
                names = readers[0] if len(readers) == 1 else f'{", ".join(readers[:-1])} or {readers[-1]}'
                groups[title] = parser.add_argument_group(title, f'read with --version {names} only')
            group = groups[title]
        options, owned = dict(flag.options), owned_defaults.get(flag.dest)
        if owned:  # (None: "left out"; the parser fills in the default of the run's --version)
            others = '; '.join(f'{name}: {value}' for name, value in owned.items())
            options.update(default=None, help=f'{options["help"]} (default: {flag.options["default"]}; {others})')
        group.add_argument(flag.name, **options)


def given_flags(argv=None) -> set:
    """The destinations of the flags given on the command line (`argv`, default sys.argv[1:])."""
    parser = get_args_parser()
    for action in parser._actions:  # (argparse has no public way to ask which flags were given)
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))
