"""What a run writes under --out: args.json, log.txt, metrics.jsonl, checkpoint.pt, best.pt.

Logs and metrics are appended, never truncated, so a resumed run continues the same files.
Checkpoints are written to a temporary file, flushed to disk and renamed over the old one,
so a crash mid-write never replaces a good checkpoint with a broken one.
"""
import json
import os
import time
from pathlib import Path

import torch

from dataset.splits import UNLABELED_MODES
from utils.errors import UserError

CHECKPOINT, PREVIOUS, BEST = 'checkpoint.pt', 'checkpoint.prev.pt', 'best.pt'


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
            f'{"_bf16" if args.amp else ""}')
    if args.version == 'SimPro':
        name += f'_tau{args.tau:g}_emau{args.ema_u:g}'
    elif args.version == 'ACR_d':
        name += f'_tau{args.tau1:g}-{args.tau12:g}-{args.tau2:g}_emau{args.ema_u:g}_est{args.est_epoch}'
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
