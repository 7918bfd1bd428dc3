"""Realistic long-tailed semi-supervised learning: one training loop for every method.

A method (one file in methods/, on the contract of methods/base.py) is the small piece that
differs; its recipes are its launcher in sh/.

    bash sh/<method>.sh cifar10 0               # a row of the paper's tables (see sh/)
    python train.py --version <method> --dataset cifar10 --imb-ratio-label 150 \\
        --imb-ratio-unlabel 150 --flag-reverse-LT 1 ...                      # any setting
    python train.py ... --dry-run               # print the split and the model, train nothing
    python train.py ... --resume auto           # continue the run in --out, if there is one

Runs on one CUDA GPU when present, else on the CPU (`--device` overrides), or under torchrun on
several GPUs and machines (`torchrun --nproc_per_node 4 train.py ...`, or NPROC=4 with the launchers).
"""
import utils.interrupt  # noqa: F401 (first: a Ctrl-C while the rest imports is one line)
import argparse
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel

from dataset.data import DATASETS, MAIN_TEST, build_data
from dataset.device_batches import DeviceBatches, EvalBatches, to_device
from dataset.sampler import PassBatches, check_fits_batch
from dataset.splits import UNLABELED_MODES
from methods import (DEFAULT_METHOD, METHODS, Method, StepResult, fill_own_defaults, flag_readers, own_defaults,
                     symmetric_kl)
from models import ARCHS, ModelConfigError, build_model, count_parameters
from core.arguments import check_arguments
from core.checkpoint import BEST, CHECKPOINT, save_checkpoint
from core.evaluate import add_to_history, due_test_sets, evaluate_sets, new_history, shot_groups, test_set_record
from core.meter import EpochMeter
from core.recipes import launcher, off_recipe, recipe
from core.run_folder import data_identity, default_out_dir, resolve_resume, write_args
from core.run_lock import RunLock
from core.run_log import Progress, RunLog, print_split
from core.settings import read_settings
from core.stopping import StopSignal
from core.training import (ModelEMA, compile_step, constant_schedule, cosine_schedule, learning_rate_on_device,
                           rng_states, seed_everything, set_rng_states)
from utils import distributed
from utils.cli import HelpFormatter, OneLineParser
from utils.errors import UserError


def epilog() -> str:
    launchers = ', '.join(str(launcher(name).relative_to(Path(__file__).parent)) for name in METHODS)
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
    p = TrainParser(description=__doc__.split('\n')[0], formatter_class=HelpFormatter, epilog=epilog())
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
    method.add_argument('--arch', choices=ARCHS, help='network (default: the dataset\'s, dataset.data.DATASETS: '
                                                      'wideresnet for CIFAR/STL-10/digits, resnet50 for ImageNet)')
    method.add_argument('--depth', type=int, help='WideResNet/ResNeXt depth (default 28; e.g. 10 for quick runs)')
    method.add_argument('--widen-factor', type=int, help='WideResNet widen factor / ResNeXt width (default 2)')
    method.add_argument('--bn-momentum', type=float, help="BatchNorm momentum (default: the network's own, "
                                                          "0.001 for WideResNet)")
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


def new_model(args, num_classes):
    method = METHODS[args.version]
    return build_model(args.arch, num_classes, two_heads=method.two_heads, depth=args.depth,
                       widen_factor=args.widen_factor, bn_momentum=args.bn_momentum,
                       projection=method.projection_heads)


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


def resolve_device(name):
    """The device of this process (cuda:LOCAL_RANK under torchrun), joining the process group."""
    try:
        device = distributed.setup(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as e:
        raise UserError(f'--device {name} is not usable here ({str(e).splitlines()[0]})')
    return device


def make_batches(args, data, method, step: int, device):
    """Endless batches positioned at `step`, and test_batches(rows): this process's share of those rows
    of the test images, in order. The views of a batch are made on the device (--aug gpu) or per
    image with PIL in loader workers (--aug cpu); batches.views(batch) gives its (labeled batch,
    unlabeled batch) pair: the batch itself, or with --compile and views of fixed shapes, the views
    made on the device from the batch's plan (in the compiled step)."""
    data = method.training_data(data)  # (a generation's own split)
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
                              method.labeled_views, method.unlabeled_views, args.batch_size, args.mu, mean=data.mean,
                              std=data.std, flip=data.flip, cutout=data.cutout, planned=args.compile,
                              labeled_targets=torch.from_numpy(data.labeled_targets), **common),
                test_batches)
    labeled_set, unlabeled_set, test_set = data.datasets(method.labeled_views, method.unlabeled_views)

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


@dataclass
class Training:
    """What a step updates and a checkpoint holds (with the step, the history and the RNG states)."""
    method: Method
    model: torch.nn.Module
    ema: Optional[ModelEMA]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    forward: Callable  # the model (wrapped for DistributedDataParallel under several processes)
    compiled: bool = False  # --compile: self.learn is learn torch.compile'd

    def __post_init__(self):  # (learn unbound: a run that referred to itself would outlive its process group)
        self.learn = compile_step(learn, self.optimizer, next(self.model.parameters()).device) if self.compiled \
            else learn

    def state_dict(self) -> dict:
        return {'model': self.model.state_dict(), 'ema': self.ema.model.state_dict() if self.ema else None,
                'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict(),
                'method': self.method.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state['model'])
        if self.ema:
            self.ema.model.load_state_dict(state['ema'])
        how = [{k: group[k] for k in ('foreach', 'fused') if k in group} for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state['optimizer'])
        for group, options in zip(self.optimizer.param_groups, how):  # how it computes stays the code's
            group.update(options)
        learning_rate_on_device(self.optimizer, self.compiled)
        self.scheduler.load_state_dict(state['scheduler'])
        self.method.load_state_dict(state['method'])


def build_training(args, data, device, method=None, seed=None) -> Training:
    """The method, the network, its weight EMA, the optimizer and the schedule of a fresh run (or of
    a new generation: its method carries on, the network is drawn from the generation's seed)."""
    seed_everything(args.seed if seed is None else seed)
    model = new_model(args, data.num_classes).to(device)
    if method is None:  # (after the network: a method's own random draws never move its initialisation)
        method = METHODS[args.version](args, data, num_features=model.num_features).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = method.make_optimizer(model, args)  # (the loop's SGD, unless the method has its own)
    starts = method.generation_starts  # the schedule restarts with every generation, each as long as the first
    cycle = starts[0] if starts else args.total_steps
    schedule = cosine_schedule(cycle) if args.lr_schedule == 'cosine' else constant_schedule
    forward = model
    if distributed.world_size() > 1:  # gradients averaged over the processes; static graph: the WRN
        forward = DistributedDataParallel(model, static_graph=True)  # has a BatchNorm without gradient
    ema = ModelEMA(model, args.ema_decay, args.ema_warmup, on_device=args.compile) if args.use_ema else None
    return Training(method, model, ema, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), forward,
                    compiled=args.compile)


def next_generation(args, data, run: Training, device) -> Training:
    """A generation boundary: the method starts its generation from the last weight EMA (a self-
    training method pseudo-labels the pool with it); the network, its EMA, the optimizer and the
    schedule start afresh."""
    seed = run.method.start_generation(run.ema.model if run.ema else run.model, data, device)
    return build_training(args, data, device, method=run.method, seed=seed)


def learn(run: Training, views: Callable, batch, device, args, ema_decay) -> Tuple[StepResult, torch.Tensor]:
    """The part of a step that --compile compiles: the views of `batch` (views(batch); made here when
    the batch is their plan on the device), one forward pass over every view of the labeled and
    unlabeled batch, the method's loss (its E-step included), the optimizer step and the weight EMA.
    Returns the step's result and the unlabeled batch's labels (for the log)."""
    (x_views, y, _), (u_views, u_labels, u_index) = views(batch)
    inputs = torch.cat([*x_views, *u_views]).to(device, non_blocking=True)
    if args.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    y, u_index = y.to(device, non_blocking=True), u_index.to(device, non_blocking=True)
    run.forward.train()
    with torch.autocast(device.type, dtype=torch.bfloat16) if args.amp else nullcontext():
        run.method.before_forward(inputs, y, run.ema.model if run.ema else run.model)
        output = run.forward(inputs, with_features=run.method.with_features)
    output = tuple(o.float() for o in output) if isinstance(output, tuple) else output.float()
    result = run.method.loss(output, y, u_index)
    result.loss.backward()
    run.optimizer.step()
    if run.ema:
        run.ema.update(run.model, ema_decay)
    return result, u_labels.to(device, non_blocking=True)


def train_step(run: Training, batches, device, args) -> Tuple[StepResult, torch.Tensor]:
    """One step on the next batch of `batches` (make_batches): the gradients cleared, learn, then the
    learning-rate schedule. Returns the step's result and the unlabeled batch's labels."""
    decay = run.ema.decay_after(run.scheduler.last_epoch + 1) if run.ema else None  # (the schedule counts steps)
    if run.compiled:
        torch.compiler.cudagraph_mark_step_begin()  # (the last step's CUDA graph outputs are read: reuse them)
    run.optimizer.zero_grad(set_to_none=True)
    result = run.learn(run, batches.views, next(batches), device, args, decay)
    run.scheduler.step()
    return result


def resolve_speed_options(args, device, image_bytes: int = 0) -> None:
    """Defaults that depend on the device: on CUDA, batched augmentation on the GPU when the split's
    images (`image_bytes`) take at most a quarter of its memory, channels-last, and cuDNN timing its
    convolution algorithms once (every training step has the same shapes)."""
    cuda = device.type == 'cuda'
    fits = cuda and image_bytes <= torch.cuda.get_device_properties(device).total_memory // 4
    args.aug = args.aug or ('gpu' if fits else 'cpu')
    args.channels_last = cuda if args.channels_last is None else args.channels_last
    args.amp = args.amp and cuda
    torch.backends.cudnn.benchmark = cuda


def train(args, data, stop: StopSignal) -> None:
    device = resolve_device(args.device)
    resolve_speed_options(args, device, data.images.nbytes + data.test_images.nbytes)
    main_process, identity = distributed.is_main(), data_identity(data)
    parser = get_args_parser()
    expected = recipe(vars(args), parser)  # the method's launcher's, for the run's row
    off = off_recipe(vars(args), expected) if expected else None
    out, checkpoint, notes = resolve_resume(args, identity, default_out_dir(args, on_recipe=off == []),
                                            defaults=vars(parser.parse_args([])))  # (refuses other settings,
    # other data, another run's --out)
    run = build_training(args, data, device)
    history, step, meter, record = new_history(data.test_sets), 0, EpochMeter(device), None
    if checkpoint:
        history, step, record = restore(run, meter, checkpoint)
    batches, test_batches = make_batches(args, data, run.method, step, device)  # (may refuse: before writing)
    with RunLock(out, enabled=main_process):  # one process at a time writes a run folder
        if main_process and not (checkpoint and (out / 'args.json').exists()):
            write_args(out, read_settings(vars(args)))
        progress = Progress(args, step, math.ceil(args.total_steps / args.eval_step) * args.eval_step,
                            main_process)
        log = RunLog(out, echo=progress.write, enabled=main_process, tensorboard=args.tensorboard)
        log.forget_metrics_after(step, last=record)
        for note in start_notes(args, expected, off, progress.last_step, run.method) + notes:
            log.line(f'note: {note}')
        log.line(f'{"resuming at step " + str(step) if checkpoint else "starting"}: {args.version} on '
                 f'{args.dataset}, {args.arch} ({count_parameters(run.model):,} parameters), {device} x '
                 f'{distributed.world_size()}, {args.aug} augmentation{", bf16" if args.amp else ""}, output {out}')
        first_step, started = step, time.time()
        while step < progress.last_step:
            if step in run.method.generation_starts:
                batches = test_batches = None  # (frees their copy of the images on the device first)
                run = next_generation(args, data, run, device)
                batches, test_batches = make_batches(args, data, run.method, step, device)
                log.line(f'step {step}: {run.method.describe_generation()}')
            if step in run.method.stage_starts:  # a stage of the method's own: the network carries on
                line = run.method.start_stage(run.ema.model if run.ema else run.model, data, device)
                log.line(f'step {step}: {line}')
            with stop.deferred(step > first_step):  # a signal waits for the step's end (see StopSignal)
                result, unlabeled_labels = train_step(run, batches, device, args)
                step += 1
                meter.add(step, *result, unlabeled_labels)
                stopping = stop.requested(step, device)
                if step % progress.every == 0 or step % args.eval_step == 0 or stopping:
                    meter.check_finite(last_good=str(out / CHECKPOINT) if (out / CHECKPOINT).exists()
                                       else 'none yet')
                    progress.update(step, result.loss)
            if step % args.eval_step == 0:  # the epoch's end, also when stopping: a resumed run starts after it
                run.method.end_epoch()  # (e.g. a prior's closed-form M-step)
                due = due_test_sets(data.test_sets, step // args.eval_step, progress.last_step // args.eval_step)
                tested = evaluate_sets(run.method.eval_network(run.ema.model if run.ema else run.model),
                                       test_batches, data.test_sets, due, run.method.eval_logits, data.num_classes,
                                       device)
                is_best = add_to_history(history, tested)
                record = epoch_record(step, args, data, tested, history, run, meter, time.time() - started)
                log.metrics(record)
                log.line(epoch_line(record, data.test_sets))
                meter, started = EpochMeter(device), time.time()
                save_run(out / CHECKPOINT, run, step, history, meter, args, identity, record)
                if is_best:
                    save_run(out / BEST, run, step, history, meter, args, identity, record)
            elif stopping:  # mid-epoch: save where we are, with the epoch's E-step sums so far
                save_run(out / CHECKPOINT, run, step, history, meter, args, identity, record)
            if stopping:
                log.line(f'stopped by {stop.name} at step {step}; checkpoint saved. Continue with the same '
                         f'command and --resume auto')
                return
        progress.close()
        log.line(f'finished: best top1 {history["best_top1"]:.2f}, outputs in {out}')
        log.close()


def restore(run: Training, meter: EpochMeter, checkpoint: dict):
    """Load the checkpoint into the run and the meter; (history, step, last metrics line)."""
    try:
        run.load_state_dict(checkpoint)
        set_rng_states(checkpoint['rng'])
        meter.load_state_dict(checkpoint['meter'])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f'the checkpoint does not fit the run of these settings ({str(e).splitlines()[0][:200]}); '
                        f'resume it with the code and settings that wrote it, or use a new --out')
    return checkpoint['history'], checkpoint['step'], checkpoint.get('record')


def start_notes(args, expected, off, steps: int, method: Method) -> list:
    """What a run says before it starts: how it stands to its paper recipe, the steps it trains when
    they are not --total-steps, and the parts of its method that never act."""
    notes = []
    if expected is None:
        notes.append(f'{launcher(args.version).name} has no recipe for {args.dataset}; this run is not compared '
                     f'with a paper recipe')
    elif off:
        notes.append(f'{args.version} on {args.dataset} runs off its paper recipe ({expected.where}): {", ".join(off)}')
    if steps != args.total_steps:
        notes.append(f'--total-steps {args.total_steps} is no whole number of epochs of --eval-step {args.eval_step}: '
                     f'the run trains {steps} steps (whole epochs, as the original; the schedule\'s T stays '
                     f'{args.total_steps})')
    return notes + [f'{args.version}: {idle}' for idle in method.idle_parts(args, steps)]


def save_run(path: Path, run: Training, step, history, meter, args, data: dict, record: Optional[dict]):
    """Everything a resumed run needs to continue exactly, the identity of the data it reads and
    the last evaluation's line of metrics.jsonl (written by the first process only)."""
    if distributed.is_main():
        state = {**run.state_dict(), 'rng': rng_states(), 'history': history, 'step': step,
                 'meter': meter.state_dict(), 'args': read_settings(vars(args)), 'data': data, 'record': record}
        save_checkpoint(state, path, keep_previous=path.name == CHECKPOINT)


def epoch_record(step, args, data, tested, history, run: Training, meter, seconds) -> dict:
    """One line of metrics.jsonl (README, "Outputs"): the main test set's numbers, each other test set
    evaluated (`tested`: name -> evaluate's result) under its name, the method's and the meter's."""
    pi_u, true_prior = run.method.unlabeled_prior(), data.unlabeled_prior
    groups = shot_groups(data.labeled_per_class)
    sets = {name: test_set_record(result, history if name == MAIN_TEST else history[name], groups)
            for name, result in tested.items()}
    main = sets.pop(MAIN_TEST)
    record = {'step': step, 'epoch': step // args.eval_step, **{k: v for k, v in main.items() if k != 'evaluated'},
              'pi_u': None if pi_u is None else pi_u.tolist(),
              'kl_pi_u': None if pi_u is None or true_prior is None else symmetric_kl(pi_u.cpu(),
                                                                                       torch.as_tensor(true_prior)),
              **meter.result(), 'lr': float(run.scheduler.get_last_lr()[0]), 'evaluated': main['evaluated'],
              'seconds': round(seconds, 2), **sets, **run.method.metrics()}  # (what a method logs of its own state)
    return record


def epoch_line(record: dict, test_sets=()) -> str:
    """The log line of an evaluation; `test_sets`: the names of the other test sets of the split."""
    kl = 'unknown' if record['kl_pi_u'] is None else f"{record['kl_pi_u']:.4f}"
    others = ''.join(f" {name.replace('_', ' ')} top1 {record[name]['top1']:.2f} (mean20 "
                     f"{record[name]['mean20_top1']:.2f})" for name in test_sets if name in record)
    return (f"epoch {record['epoch']} step {record['step']}: top1 {record['top1']:.2f} "
            f"(best {record['best_top1']:.2f}, mean20 {record['mean20_top1']:.2f}) top5 {record['top5']:.2f}{others} "
            f"loss {record['loss']:.4f} mask {record['mask_ratio']:.3f} KL(pi_u) {kl}")


def checked_data(args, given=()):
    """The split of the arguments, after checking every argument (one line each, before any data is
    read or anything written: core/arguments.py with the method's own flags and checks, the network
    on the meta device, batches that fit). `given`: the flags given on the command line."""
    check_arguments(args, given)
    args.arch = args.arch or DATASETS[args.dataset].arch
    check_network(args)
    data = build_data(args, METHODS[args.version].labeled_in_pool)
    if not args.dry_run:
        for what, size, batch in (('labeled set', len(data.labeled_idx), args.batch_size),
                                  ('unlabeled pool', len(data.unlabeled_idx), args.batch_size * args.mu)):
            check_fits_batch(what, size, batch, distributed.launched_processes())
    return data


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        with StopSignal() as stop:  # SIGTERM/SIGINT from the first data read on (core/stopping.py)
            data = checked_data(args, given_flags(argv))
            if args.dry_run:
                model = new_model(args, data.num_classes)
                print_split({**data.summary(args.version), 'model': args.arch, 'params': count_parameters(model),
                             'config': read_settings(vars(args))}, data.notes)
            else:
                train(args, data, stop)
        return 0
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    finally:
        distributed.cleanup()


if __name__ == '__main__':
    sys.exit(main())
