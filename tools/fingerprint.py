"""Short runs of every method, one digest per part of each: the check that a change to the loop,
the views or a method changes nothing that is learned.

    python -m tools.fingerprint --save before.json       # on the code before the change
    python -m tools.fingerprint --compare before.json    # after it: each run equal, or the parts that differ

Each method trains 6 steps (3 epochs) of a WRN-10-1 on a small fake CIFAR-10, on both augmentation
paths (--aug cpu and gpu), with settings that reach its stage, generation or refinement boundaries
within those steps; FixMatch also with --optimizer adam. One CPU thread, so that the numbers do not
depend on the machine's core count. A run's parts: `metrics` (metrics.jsonl without the wall
times), `model`, `ema`, `optimizer` (its state and hyper-parameters, not how it computes them: foreach,
fused, ...), `method` (the tensors of the last checkpoint) and `rng`.
"""
import utils.startup  # noqa: F401 (first: a Ctrl-C while the rest imports is one line)
import hashlib
import io
import json
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import torch

from utils.cli import OneLineParser, unwritable

BASE = ['--num-max', '20', '--num-max-u', '30', '--imb-ratio-label', '10', '--imb-ratio-unlabel', '10',
        '--flag-reverse-LT', '1', '--total-steps', '6', '--eval-step', '2', '--batch-size', '4', '--mu', '2',
        '--num-workers', '0', '--lr', '0.1', '--threshold', '0.3', '--device', 'cpu', '--no-progress',
        '--depth', '10', '--widen-factor', '1']
IMPLEMENTATION = ('foreach', 'fused', 'capturable', 'differentiable')  # optimizer options that are left out
EXTRA = {  # per run: what reaches the method's boundaries in 6 steps
    'FixMatch': [],
    'FixMatch-adam': ['--optimizer', 'adam', '--lr', '0.002'],
    'DARP': ['--darp-warmup-ratio', '0.2', '--darp-period', '2'],
    'CReST+': ['--generations', '3'],
    'CoSSL': ['--cossl-start', '2', '--tfe-warmup-steps', '2'],
    'DASO': ['--pretrain-steps', '1', '--pl-dist-update-period', '2', '--lr-schedule', 'constant', '--wdecay-all',
             '--ema-warmup'],
    'ACR_d': ['--est-epoch', '0'],
    'ACR': ['--est-epoch', '0'],
    'SimPro': ['--ema-u', '0.5'],
    'CCL': ['--est-epoch', '0', '--upbatch', '1'],
}


def digest(value) -> str:
    """sha256 of every tensor (its dtype, shape and bytes) and every other leaf, in order."""
    h = hashlib.sha256()

    def feed(v):
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().contiguous()
            h.update(f'{v.dtype}{tuple(v.shape)}'.encode())
            h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(v, dict):
            for k in sorted(v, key=str):
                h.update(str(k).encode())
                feed(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                feed(x)
        else:
            h.update(repr(v).encode())
    feed(value)
    return h.hexdigest()[:16]


def run_digests(data_dir: Path, out: Path, name: str, aug: str) -> dict:
    import train
    method = name.split('-')[0]
    argv = [*BASE, '--data-dir', str(data_dir), '--out', str(out), '--version', method, '--aug', aug, *EXTRA[name]]
    with redirect_stdout(io.StringIO()):
        code = train.main(argv)
    if code != 0:
        raise SystemExit(f'error: the {name} run with --aug {aug} failed (exit {code})')
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    for record in records:
        record.pop('seconds')
    state = torch.load(out / 'checkpoint.pt', weights_only=False)
    for group in state['optimizer']['param_groups']:  # how the update is computed, not what it computes
        for key in IMPLEMENTATION:
            group.pop(key, None)
    parts = {part: digest(state[part]) for part in ('model', 'ema', 'optimizer', 'method', 'rng')}
    return {'metrics': digest(records), **parts}


def fingerprints() -> dict:
    from tools import fake_data
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = fake_data.write_cifar(Path(tmp) / 'data', 10, 60, 5)
        result = {}
        for name in EXTRA:
            for aug in ('cpu', 'gpu'):
                result[f'{name} --aug {aug}'] = run_digests(data_dir, Path(tmp) / f'{name}-{aug}', name, aug)
                print(f'{name} --aug {aug}: {result[f"{name} --aug {aug}"]["metrics"]}', file=sys.stderr, flush=True)
    return result


def main(argv=None) -> int:
    parser = OneLineParser(prog='python -m tools.fingerprint', description=__doc__.split('\n')[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--save', help='write the digests to this JSON file')
    what.add_argument('--compare', help='compare with the digests in this JSON file')
    args = parser.parse_args(argv)
    if args.compare and not Path(args.compare).is_file():
        parser.error(f'--compare {args.compare}: no such file; make one with --save on the code to compare with')
    if args.save and (why := unwritable('--save', args.save, folder=False)):  # (before the runs, not after)
        parser.error(why)
    now = fingerprints()
    if args.save:
        try:
            Path(args.save).write_text(json.dumps(now, indent=1) + '\n')
        except OSError as e:
            parser.error(f'cannot write --save {args.save} ({e.strerror}); free space or choose another file')
        print(f'{len(now)} runs written to {args.save}')
        return 0
    before, differ = json.loads(Path(args.compare).read_text()), 0
    for run, parts in now.items():
        changed = [part for part, value in parts.items() if before.get(run, {}).get(part) != value]
        differ += bool(changed)
        print(f'{run}: {"equal" if not changed else "differs in " + ", ".join(changed)}')
    print(f'{len(now) - differ} of {len(now)} runs equal')
    return 1 if differ else 0


if __name__ == '__main__':
    sys.exit(main())
