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

CHECKPOINT, BEST = 'checkpoint.pt', 'best.pt'


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
    """log.txt (human lines, also printed) and metrics.jsonl (one JSON object per evaluation)."""

    def __init__(self, out: Path, echo=print):
        self.out, self.echo = out, echo

    def line(self, text: str) -> None:
        self.echo(text)
        with open(self.out / 'log.txt', 'a') as f:
            f.write(f'{time.strftime("%Y-%m-%d %H:%M:%S")} {text}\n')

    def metrics(self, record: dict) -> None:
        with open(self.out / 'metrics.jsonl', 'a') as f:
            f.write(json.dumps(record) + '\n')


def prepare_out_dir(out: Path, args_dict: dict) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / 'args.json').write_text(json.dumps(args_dict, indent=2) + '\n')
    except OSError as e:
        raise UserError(f'cannot write to --out {out} ({e.strerror}); choose a writable directory')


def save_checkpoint(state: dict, path: Path) -> None:
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'wb') as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # truncated, not a checkpoint, unreadable
        raise UserError(f'cannot read checkpoint {path} ({type(e).__name__}); pass another --resume')
