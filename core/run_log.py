"""What a run shows and appends as it goes: log.txt, metrics.jsonl (and TensorBoard), the progress
bar or lines, and the split table of --dry-run. Logs and metrics are appended, never truncated,
so a resumed run continues the same files."""
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from utils.errors import OutputError, UserError


# TensorBoard's section of a metric: the test set's numbers under test/, the estimate's under prior/,
# the rest (losses, mask ratio, pseudo-label accuracy, learning rate, time) under train/
TENSORBOARD_SECTION = {'top1': 'test', 'top5': 'test', 'best_top1': 'test', 'mean20_top1': 'test',
                       'evaluated': 'test', 'kl_pi_u': 'prior'}


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
                self.board.add_scalar(f'{TENSORBOARD_SECTION.get(key, "train")}/{key}', value, step)
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

    def forget_metrics_after(self, step: int, last: Optional[dict] = None) -> None:
        """On resume: drop metrics of evaluations after the checkpoint's step (a run stopped between
        writing them and its checkpoint), and a half-written last line (a run killed while writing
        it); the resumed run writes them again, identically. `last`, the checkpoint's copy of its
        last evaluation's line, is written back when the file lost it (torn at the run's last step,
        nothing is redone)."""
        path = self.out / 'metrics.jsonl'
        if not self.enabled:
            return
        text = path.read_text() if path.exists() else ''
        lines = text.splitlines()
        kept, steps = [], set()
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line) if line.strip() else None
            except ValueError:
                if number < len(lines):
                    raise UserError(f'{path} line {number} is not JSON; repair or delete that line, then resume')
                self.line(f'dropped the half-written last line of {path} (a run killed while writing it); '
                          f'its evaluation is redone')
                continue
            if record is not None and record['step'] <= step:
                kept.append(line + '\n')
                steps.add(record['step'])
        if last is not None and last['step'] not in steps:
            kept.append(json.dumps(last) + '\n')  # (it is the last line: later ones were dropped above)
        if ''.join(kept) != text:
            tmp = path.with_name(path.name + '.tmp')
            tmp.write_text(''.join(kept))
            os.replace(tmp, path)

    def _append(self, name: str, text: str) -> None:
        try:
            with open(self.out / name, 'a') as f:
                f.write(text)
        except OSError as e:
            raise UserError(f'cannot write {self.out / name} ({e.strerror}); free space or choose another --out')


class Progress:
    """A tqdm bar on a terminal; otherwise a plain line every few steps (logs stay readable), and
    at least every SECONDS on a slow machine."""
    SECONDS = 10

    def __init__(self, args, step, last_step, enabled=True):
        self.bar, self.enabled = None, enabled
        self.every = max(1, min(100, args.eval_step // 5))
        self.last_step, self.started, self.first = last_step, time.time(), step
        self.shown = self.started
        if sys.stdout.isatty() and not args.no_progress and enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=last_step, initial=step, unit='step', dynamic_ncols=True)

    def overdue(self) -> bool:
        """Whether the last update is SECONDS old (each step between them cost nothing to show)."""
        return self.enabled and time.time() - self.shown >= self.SECONDS

    def update(self, step, loss):
        if not self.enabled:
            return
        self.shown = time.time()
        if self.bar:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f'{loss.item():.4f}')
        else:
            rate = (step - self.first) / max(1e-9, time.time() - self.started)
            self._print(f'step {step}/{self.last_step} loss {loss.item():.4f} {rate:.2f} steps/s')

    def write(self, text):
        if self.bar:
            self.bar.write(text)
        else:
            self._print(text)

    def _print(self, text):
        """Show a line on stdout; when stdout cannot be written (a full disk, a closed pipe), say so
        once on stderr and go on: the run's lines are in its log.txt (utils/startup.py)."""
        try:
            print(text, flush=True)
        except OutputError as e:
            print(f'warning: {e}; the run goes on, its lines are in log.txt in its folder', file=sys.stderr,
                  flush=True)

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
