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
import utils.startup  # noqa: F401 (first: a Ctrl-C while the rest imports is one line)
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional, Tuple

import torch

from core.arguments import check_before_data
from core.checkpoint import BEST, CHECKPOINT, save_checkpoint
from core.command_line import get_args_parser, given_flags
from core.device import resolve_device, resolve_speed_options
from core.evaluate import add_to_history, due_test_sets, evaluate_sets, new_history, shot_groups, test_set_record
from core.meter import EpochMeter
from core.recipes import launcher, off_recipe, recipe
from core.run_folder import data_identity, default_out_dir, resolve_resume, write_args
from core.run_lock import RunLock
from core.run_log import Progress, RunLog, print_split
from core.settings import TRAINING_ONLY, read_settings
from core.stopping import StopSignal
from core.training import Training, build_training, new_model, rng_states, set_rng_states
from dataset.batches import make_batches
from dataset.data import MAIN_TEST, build_data
from dataset.sampler import check_fits_batch
from methods import METHODS, Batch, Method, StepResult, symmetric_kl
from models import count_parameters
from utils import distributed
from utils.errors import UserError


def next_generation(args, data, run: Training, device) -> Training:
    """A generation boundary: the method starts its generation from the last weight EMA (a self-
    training method pseudo-labels the pool with it); the network, its EMA, the optimizer and the
    schedule start afresh."""
    seed = run.method.start_generation(run.ema.model if run.ema else run.model, data, device)
    return build_training(args, data, device, learn, method=run.method, seed=seed)


def learn(run: Training, views: Callable, batch, device, args, ema_decay) -> Tuple[StepResult, torch.Tensor]:
    """The part of a step that --compile compiles: the views of `batch` (views(batch); made here when
    the batch is their plan on the device), one forward pass over every view of the labeled and
    unlabeled batch, the method's loss (its E-step included), the optimizer step and the weight EMA.
    Returns the step's result and the unlabeled batch's labels (for the log)."""
    (x_views, y, x_index), (u_views, u_labels, u_index) = views(batch)
    images = torch.cat([*x_views, *u_views]).to(device, non_blocking=True)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    y, x_index, u_index = (t.to(device, non_blocking=True) for t in (y, x_index, u_index))
    method = run.method
    run.forward.train()
    with torch.autocast(device.type, dtype=torch.bfloat16) if args.amp else nullcontext():
        method.before_forward(Batch.of(method, images, y, u_index, x_index), run.ema.model if run.ema else run.model)
        output = run.forward(images, **method.forward_options()).float()
    result = method.loss(Batch.of(method, output, y, u_index, x_index))
    result.loss.backward()
    run.optimizer.step()
    if run.ema:
        run.ema.update(run.model, ema_decay)
    return result, u_labels.to(device, non_blocking=True)


def method_batches(args, data, method: Method, step: int, device):
    """The batches of the method's views of the split it trains on (make_batches), from `step` on."""
    return make_batches(args, method.training_data(data), method.view_kinds(), step, device)


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


def train(args, data, stop: StopSignal) -> None:
    device = resolve_device(args.device)
    device_notes = resolve_speed_options(args, device, data.images.nbytes + data.test_images.nbytes)
    main_process, identity = distributed.is_main(), data_identity(data)
    parser = get_args_parser()
    expected = recipe(vars(args), parser)  # the method's launcher's, for the run's row
    off = off_recipe(vars(args), expected) if expected else None
    out, checkpoint, notes = resolve_resume(args, identity, default_out_dir(args, on_recipe=off == []),
                                            defaults=vars(parser.parse_args([])))  # (refuses other settings,
    # other data, another run's --out)
    run = build_training(args, data, device, learn)
    history, step, meter, record = new_history(data.test_sets), 0, EpochMeter(device), None
    if checkpoint:
        history, step, record = restore(run, meter, checkpoint)
    batches, test_batches = method_batches(args, data, run.method, step, device)  # (may refuse: before writing)
    with RunLock(out, enabled=main_process):  # one process at a time writes a run folder
        if main_process and not (checkpoint and (out / 'args.json').exists()):
            write_args(out, read_settings(vars(args)))
        progress = Progress(args, step, math.ceil(args.total_steps / args.eval_step) * args.eval_step,
                            main_process)
        log = RunLog(out, echo=progress.write, enabled=main_process, tensorboard=args.tensorboard)
        log.forget_metrics_after(step, last=record)
        for note in start_notes(args, expected, off, progress.last_step, run.method) + device_notes + notes:
            log.line(f'note: {note}')
        log.line(f'{"resuming at step " + str(step) if checkpoint else "starting"}: {args.version} on '
                 f'{args.dataset}, {args.arch} ({count_parameters(run.model):,} parameters), {device} x '
                 f'{distributed.world_size()}, {args.aug} augmentation{", bf16" if args.amp else ""}, output {out}')
        if args.compile:
            log.line('compiling the step (torch.compile): the first step waits for it, a minute or more (README, '
                     '"Speed"); a method whose step branches compiles each branch at its first step')
        first_step, started = step, time.time()
        while step < progress.last_step:
            if step in run.method.generation_starts:
                batches = test_batches = None  # (frees their copy of the images on the device first)
                run = next_generation(args, data, run, device)
                batches, test_batches = method_batches(args, data, run.method, step, device)
                log.line(f'step {step}: {run.method.describe_generation()}')
            if step in run.method.stage_starts:  # a stage of the method's own: the network carries on
                line = run.method.start_stage(run.ema.model if run.ema else run.model, data, device, run.model)
                if run.method.stages_change_labeled_set:  # (a new labeled set: batches of it)
                    batches = test_batches = None
                    batches, test_batches = method_batches(args, data, run.method, step, device)
                log.line(f'step {step}: {line}')
            with stop.deferred(step > first_step):  # a signal waits for the step's end (see StopSignal)
                result, unlabeled_labels = train_step(run, batches, device, args)
                step += 1
                meter.add(step, *result, unlabeled_labels)
                stopping = stop.requested(step, device)
                checked = step % progress.every == 0 or step % args.eval_step == 0 or stopping
                if checked:
                    meter.check_finite(last_good=str(out / CHECKPOINT) if (out / CHECKPOINT).exists()
                                       else 'none yet')
                if checked or progress.overdue():
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
    check_before_data(args, given)
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
            given = given_flags(argv)
            data = checked_data(args, given)
            if args.dry_run:
                model = new_model(args, data.num_classes)
                unread = ', '.join(f'--{k.replace("_", "-")}' for k in vars(args) if k in given & TRAINING_ONLY)
                print_split({**data.summary(args.version), 'model': args.arch, 'params': count_parameters(model),
                             'config': read_settings(vars(args))},
                            [*data.notes, *([f'--dry-run trains nothing: {unread} not read'] if unread else [])])
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
