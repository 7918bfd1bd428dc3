"""What a run writes under --out: args.json, log.txt, metrics.jsonl, checkpoint.pt, best.pt.

Logs and metrics are appended, never truncated, so a resumed run continues the same files.
Checkpoints are written to a temporary file, flushed to disk and renamed over the old one,
so a crash mid-write never replaces a good checkpoint with a broken one.
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

from dataset.splits import UNLABELED_MODES
from utils.errors import UserError

CHECKPOINT, PREVIOUS, BEST = 'checkpoint.pt', 'checkpoint.prev.pt', 'best.pt'
# Arguments that do not change what is learned: they may differ when a run is resumed.
RUN_ONLY = {'data_dir', 'download', 'dry_run', 'resume', 'out', 'num_workers', 'device', 'no_progress',
            'channels_last', 'compile', 'tensorboard'}


def default_out_dir(args) -> Path:
    """result/<dataset>/<method>@<every setting that changes what is learned>."""
    mode = UNLABELED_MODES[args.flag_reverse_LT]
    arch = args.arch + ''.join(f'-{v}' for v in (args.depth, args.widen_factor) if v is not None)
    if args.bn_momentum is not None:
        arch += f'_bn{args.bn_momentum:g}'
    name = (f'{args.version}@N{args.num_max}_M{args.num_max_u}_gl{args.imb_ratio_label:g}'
            f'_gu{args.imb_ratio_unlabel:g}_{mode}_{arch}_s{args.img_size}_lr{args.lr:g}_wd{args.wdecay:g}'
            f'_steps{args.total_steps}_e{args.eval_step}_bs{args.batch_size}_mu{args.mu}_thr{args.threshold:g}'
            f'_ema{args.ema_decay if args.use_ema else 0:g}{"" if args.nesterov else "_nonesterov"}'
            f'{"_bf16" if args.amp else ""}{"" if args.lr_schedule == "cosine" else "_lr" + args.lr_schedule}'
            f'{"_wdall" if args.wdecay_all else ""}{"_emawarmup" if args.ema_warmup else ""}')
    if args.version == 'SimPro':
        name += f'_tau{args.tau:g}_emau{args.ema_u:g}'
    elif args.version == 'ACR_d':
        name += f'_tau{args.tau1:g}-{args.tau12:g}-{args.tau2:g}_emau{args.ema_u:g}_est{args.est_epoch}'
    elif args.version == 'CReST+':
        name += (f'_gen{args.generations}_alpha{args.crest_alpha:g}_tmin{args.da_t_min:g}'
                 f'{"" if args.dist_align else "_noda"}')
    return Path('result') / args.dataset / f'{name}_seed{args.seed}'


class RunLog:
    """log.txt (human lines, also shown), metrics.jsonl (one JSON object per evaluation) and, with
    --tensorboard, the same scalars under tensorboard/. Only the first process writes."""

    def __init__(self, out: Path, echo=print, enabled: bool = True, tensorboard: bool = False):
        self.out, self.echo, self.enabled = out, echo, enabled
        self.board = None
        if tensorboard and enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError('--tensorboard needs the tensorboard package: pip install tensorboard')
            self.board = SummaryWriter(str(out / 'tensorboard'))

    def line(self, text: str) -> None:
        if self.enabled:
            self.echo(text)
            self._append('log.txt', f'{time.strftime("%Y-%m-%d %H:%M:%S")} {text}\n')

    def metrics(self, record: dict) -> None:
        if self.enabled:
            self._append('metrics.jsonl', json.dumps(record) + '\n')
        if self.board:
            self._to_tensorboard(record)

    def _to_tensorboard(self, record: dict) -> None:
        step = record['step']
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ('step', 'epoch'):
                self.board.add_scalar(f'train/{key}', value, step)
        for name, value in (record.get('group_acc') or {}).items():
            if value is not None:
                self.board.add_scalar(f'group_acc/{name}', value, step)
        if record.get('pi_u') is not None:
            pi_u = torch.tensor(record['pi_u'])
            for c, p in enumerate(pi_u.tolist()):
                self.board.add_scalar(f'pi_u/class_{c}', p, step)
            classes = torch.arange(len(pi_u), dtype=torch.float64)
            self.board.add_histogram_raw(  # the estimate as a distribution over class ids
                'pi_u', min=0, max=len(pi_u) - 1, num=1, sum=float((classes * pi_u).sum()),
                sum_squares=float((classes ** 2 * pi_u).sum()), bucket_limits=(classes + 0.5).tolist(),
                bucket_counts=pi_u.tolist(), global_step=step)
        self.board.flush()

    def close(self) -> None:
        if self.board:
            self.board.close()

    def forget_metrics_after(self, step: int) -> None:
        """On resume: drop metrics of evaluations after the checkpoint's step (a run stopped between
        writing them and its checkpoint); the resumed run writes them again, identically."""
        path = self.out / 'metrics.jsonl'
        if not self.enabled or not path.exists():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and json.loads(line)['step'] <= step]
        if len(kept) < len(lines):
            tmp = path.with_name(path.name + '.tmp')
            tmp.write_text(''.join(kept))
            os.replace(tmp, path)

    def _append(self, name: str, text: str) -> None:
        try:
            with open(self.out / name, 'a') as f:
                f.write(text)
        except OSError as e:
            raise UserError(f'cannot write {self.out / name} ({e.strerror}); free space or choose another --out')


def prepare_out_dir(out: Path, args_dict: dict) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / 'args.json').write_text(json.dumps(args_dict, indent=2) + '\n')
    except OSError as e:
        raise UserError(f'cannot write to --out {out} ({e.strerror}); choose a writable directory')


def save_checkpoint(state: dict, path: Path, keep_previous: bool = False) -> None:
    """Write to a temporary file, flush it to disk, then rename it over `path`; with
    `keep_previous` the checkpoint it replaces becomes checkpoint.prev.pt. A failed write
    (disk full, ...) leaves every existing checkpoint as it was."""
    tmp = path.with_name(path.name + '.tmp')
    try:
        with open(tmp, 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, path.with_name(PREVIOUS))
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f'cannot write checkpoint {path} ({e.strerror}); the previous checkpoints are intact; '
                        f'free space or choose another --out, then resume')


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # truncated, not a checkpoint, unreadable
        raise UserError(f'cannot read checkpoint {path} ({type(e).__name__}); pass another --resume')


def latest_good_checkpoint(out: Path, warn=print):
    """--resume auto: the latest checkpoint in `out` that loads, falling back to the previous
    one when the latest is missing or corrupt; None when there is neither (a fresh start)."""
    candidates = [p for p in (out / CHECKPOINT, out / PREVIOUS) if p.is_file()]
    for i, path in enumerate(candidates):
        try:
            return load_checkpoint(path)
        except UserError as e:
            if i + 1 == len(candidates):
                raise UserError(f'{e}; no earlier checkpoint in {out} loads either')
            warn(f'warning: {e}; falling back to {candidates[i + 1]}')
    return None


def resolve_resume(args):
    """(output directory, checkpoint to continue from or None); never overwrites a run silently."""
    out = Path(args.out) if args.out else default_out_dir(args)
    if args.resume == 'auto':
        return out, latest_good_checkpoint(out, warn=lambda text: print(text, file=sys.stderr))
    if args.resume:
        path = Path(args.resume)
        path = path / CHECKPOINT if path.is_dir() else path
        if not path.is_file():
            raise UserError(f'--resume {args.resume}: no checkpoint there')
        return (Path(args.out) if args.out else path.parent), load_checkpoint(path)
    if (out / CHECKPOINT).exists() or (out / PREVIOUS).exists():
        raise UserError(f'{out} already holds a run; pass --resume auto to continue it, or choose another --out')
    return out, None


def check_same_settings(saved: dict, args) -> None:
    """A resumed run must learn exactly what the checkpoint's run learned."""
    changed = [k for k, v in vars(args).items() if k not in RUN_ONLY and saved.get(k) != v]
    if changed:
        diffs = ', '.join(f'--{k.replace("_", "-")} {saved.get(k)} (now {getattr(args, k)})' for k in changed)
        raise UserError(f'the checkpoint was trained with {diffs}; resume with the same settings or use a new --out')


class Progress:
    """A tqdm bar on a terminal; otherwise a plain line every few steps (logs stay readable)."""

    def __init__(self, args, step, last_step, enabled=True):
        self.bar, self.enabled = None, enabled
        self.every = max(1, min(100, args.eval_step // 5))
        self.last_step, self.started, self.first = last_step, time.time(), step
        if sys.stdout.isatty() and not args.no_progress and enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=last_step, initial=step, unit='step', dynamic_ncols=True)

    def update(self, step, loss):
        if not self.enabled:
            return
        if self.bar:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f'{loss.item():.4f}')
        else:
            rate = (step - self.first) / max(1e-9, time.time() - self.started)
            print(f'step {step}/{self.last_step} loss {loss.item():.4f} {rate:.2f} steps/s', flush=True)

    def write(self, text):
        if self.bar:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self):
        if self.bar:
            self.bar.close()


def print_split(summary: dict, notes=()) -> None:
    """A human-readable table of the split, then the summary as one JSON line (last line of stdout)."""
    labeled, unlabeled = summary['labeled_per_class'], summary['unlabeled_per_class']
    pool, test = summary['unlabeled_pool_per_class'], summary['test_per_class']
    mode = f", unlabeled {summary['unlabeled_mode']}" if summary['unlabeled_mode'] else ''
    print(f"{summary['dataset']} for {summary['method']}: {summary['num_classes']} classes, "
          f"{summary['image_size']}x{summary['image_size']}{mode}; {summary['model']} "
          f"({summary['params']:,} parameters)")
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
