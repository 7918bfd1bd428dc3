"""What a run writes under --out: args.json, log.txt, metrics.jsonl, checkpoint.pt, best.pt, and
run.lock while it runs.

Logs and metrics are appended, never truncated, so a resumed run continues the same files.
Checkpoints are written to a temporary file, flushed to disk and renamed over the old one,
so a crash mid-write never replaces a good checkpoint with a broken one. One process at a time
writes a run folder (run.lock), and a folder only ever holds one run (resolve_resume).
"""
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from dataset.splits import setting_name
from utils.errors import UserError
from utils.recipes import off_recipe

CHECKPOINT, PREVIOUS, BEST, LOCK = 'checkpoint.pt', 'checkpoint.prev.pt', 'best.pt', 'run.lock'
# Arguments that do not change what is learned: they may differ when a run is resumed. The data
# itself is compared by its identity (data_identity), so moving it to another --data-dir is fine.
RUN_ONLY = {'data_dir', 'download', 'dry_run', 'resume', 'out', 'num_workers', 'device', 'no_progress',
            'channels_last', 'compile', 'tensorboard'}


def setting_folder(args) -> str:
    """The split's part of a run folder: the paper's setting name and ratios, e.g. reversed_gl150,
    consistent_gl150_gu120, uniform_gl100; STL-10 gl10; the ImageNet variants their image size."""
    if args.dataset == 'stl10':
        return f'gl{args.imb_ratio_label:g}'
    if args.dataset == 'smallimagenet':
        return f'{args.img_size}px'
    if args.dataset == 'smallimagenet_1k':
        return f'gl{args.imb_ratio_label:g}_{args.img_size}px'
    name = setting_name(args.imb_ratio_unlabel, args.flag_reverse_LT)
    same_ratio = name == 'uniform' or args.imb_ratio_unlabel == args.imb_ratio_label
    return f'{name}_gl{args.imb_ratio_label:g}' + ('' if same_ratio else f'_gu{args.imb_ratio_unlabel:g}')


def default_out_dir(args) -> Path:
    """result/<dataset>/<setting>/<method>_seed<seed>, e.g. result/cifar10/reversed_gl150/SimPro_seed0.
    A run off its method's paper recipe (utils/recipes.py) adds a digest of every setting that
    changes what is learned (all of them are in the run's args.json), so no two differ only there."""
    name = args.version
    if off_recipe(vars(args)) != []:
        learned = {k: v for k, v in sorted(vars(args).items()) if k not in RUN_ONLY | {'seed'}}
        name += '-' + hashlib.sha1(json.dumps(learned, sort_keys=True).encode()).hexdigest()[:8]
    return Path('result') / args.dataset / setting_folder(args) / f'{name}_seed{args.seed}'


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
        writing them and its checkpoint), and a half-written last line (a run killed while writing
        it); the resumed run writes them again, identically."""
        path = self.out / 'metrics.jsonl'
        if not self.enabled or not path.exists():
            return
        text = path.read_text()
        lines = text.splitlines()
        kept = []
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


def prepare_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f'cannot write to --out {out} ({e.strerror}); choose a writable directory')


def write_args(out: Path, args_dict: dict) -> None:
    """args.json: the resolved configuration of the run in `out` (written whole or not at all)."""
    tmp = out / 'args.json.tmp'
    try:
        tmp.write_text(json.dumps(args_dict, indent=2) + '\n')
        os.replace(tmp, out / 'args.json')
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f'cannot write to --out {out} ({e.strerror}); choose a writable directory')


def write_error(e: BaseException):
    """The OSError behind a failed write: torch.save reports a full disk as a RuntimeError
    ('unexpected pos') raised while handling the OSError; None for any other error."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or e.__context__
    return e


@contextmanager
def signals_held():
    """SIGTERM and SIGINT that come during the block are handled after it (by the main thread's
    handlers, which are Python's: a mask would not hold them in a process with other threads)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came = []
    previous = {sig: signal.signal(sig, lambda signum, frame: came.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in came:
            signal.raise_signal(signum)


def save_checkpoint(state: dict, path: Path, keep_previous: bool = False) -> None:
    """Write to a temporary file, flush it to disk, then rename it over `path`; with
    `keep_previous` the checkpoint it replaces becomes checkpoint.prev.pt. A failed or
    interrupted write (disk full, a signal, ...) leaves every existing checkpoint as it was and
    no temporary file."""
    tmp = path.with_name(path.name + '.tmp')
    try:
        with open(tmp, 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        with signals_held():  # both renames or neither
            if keep_previous and path.exists():
                os.replace(path, path.with_name(PREVIOUS))
            os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = write_error(e)
        if cause is None:
            raise
        raise UserError(f'cannot write checkpoint {path} ({cause.strerror or cause}); the previous checkpoints '
                        f'are intact; free space or choose another --out, then resume') from None


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


def resolve_resume(args, identity: dict):
    """(output directory, checkpoint to continue from or None), after checking that the
    checkpoint's run learned what this one would (settings and data, `identity`) and that the
    output directory holds no other run: a run is never mixed with another or overwritten."""
    out = Path(args.out) if args.out else default_out_dir(args)
    if args.resume == 'auto':
        checkpoint, source = latest_good_checkpoint(out, warn=lambda text: print(text, file=sys.stderr)), out
    elif args.resume:
        path = Path(args.resume)
        path = path / CHECKPOINT if path.is_dir() else path
        if not path.is_file():
            raise UserError(f'--resume {args.resume}: no checkpoint there')
        checkpoint, source = load_checkpoint(path), path.parent
        out = Path(args.out) if args.out else source
    else:
        if (out / CHECKPOINT).exists() or (out / PREVIOUS).exists():
            raise UserError(f'{out} already holds a run; pass --resume auto to continue it, or choose another --out')
        checkpoint, source = None, None
    if checkpoint:
        check_same_settings(checkpoint['args'], args)
        check_same_data(checkpoint, identity, args)
    if checkpoint is None or not same_folder(out, source):
        check_holds_no_other_run(out, args, identity)
    return out, checkpoint


def same_folder(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and os.path.samefile(a, b)


def changed_settings(saved: dict, args) -> list:
    """'--flag saved (now value)' for each setting that changes what is learned and differs."""
    return [f'--{k.replace("_", "-")} {saved.get(k)} (now {v})' for k, v in vars(args).items()
            if k not in RUN_ONLY and saved.get(k) != v]


def check_same_settings(saved: dict, args) -> None:
    """A resumed run must learn exactly what the checkpoint's run learned."""
    changed = changed_settings(saved, args)
    if changed:
        raise UserError(f'the checkpoint was trained with {", ".join(changed)}; resume with the same settings '
                        f'or use a new --out')


def data_identity(data) -> dict:
    """What identifies the data a run learns from, cheaply (milliseconds, even for ImageNet): the
    number and size of the images, a checksum of the split's labels and rows and of 64 images
    spread over it, the same for the test set. Stored in every checkpoint; equal when the same
    files are read from another --data-dir."""
    def checksum(*arrays) -> str:
        digest = hashlib.sha256()
        for a in arrays:
            digest.update(np.ascontiguousarray(a).tobytes())
        return digest.hexdigest()[:16]

    def sample(images):
        return images[np.linspace(0, len(images) - 1, min(64, len(images))).astype(np.int64)]

    return {'training images': f'{len(data.images)} of {"x".join(map(str, data.images.shape[1:]))}',
            'labels of the split': checksum(data.labels, data.labeled_idx, data.unlabeled_idx),
            'training image content': checksum(sample(data.images)),
            'test set': f'{len(data.test_images)} images, {checksum(data.test_labels, sample(data.test_images))}'}


def check_same_data(checkpoint: dict, identity: dict, args) -> None:
    """A resumed run must read the data its checkpoint's run read (checkpoints from before this
    check hold no identity and are not checked)."""
    saved = checkpoint.get('data')
    if saved is None or saved == identity:
        return
    differ = ', '.join(f'{what} {saved.get(what)} (now {now})' for what, now in identity.items()
                       if saved.get(what) != now)
    raise UserError(f'--data-dir {args.data_dir} holds other data than the checkpoint\'s run read from '
                    f'{checkpoint["args"].get("data_dir")}: {differ}; resume with the same data or use a new --out')


def check_holds_no_other_run(out: Path, args, identity: dict) -> None:
    """Starting, or resuming a checkpoint from elsewhere, into `out`: refused when `out` holds a
    run with other settings or data (described by its checkpoint, else by its args.json)."""
    recorded, data = None, None
    try:
        saved = latest_good_checkpoint(out, warn=lambda text: None)
        if saved:
            recorded, data = saved['args'], saved.get('data')
        elif (out / 'args.json').is_file():
            recorded = json.loads((out / 'args.json').read_text())
    except (UserError, ValueError, OSError):
        raise UserError(f'--out {out} holds a run whose checkpoint or args.json cannot be read; choose another '
                        f'--out')
    if recorded is None:
        return
    changed = changed_settings(recorded, args)
    if data is not None and data != identity:
        changed.append(f'other data, from --data-dir {recorded.get("data_dir")}')
    if changed:
        raise UserError(f'--out {out} holds another run, trained with {", ".join(changed)}; choose another --out')


@contextmanager
def _folder_lock(folder: Path):
    """An exclusive flock on `folder` among the processes of this host; where the file system
    cannot lock a folder (some network file systems) it is skipped."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the flock


class RunLock:
    """<out>/run.lock, holding the process id and host of the one process writing the run folder.
    A second writer is refused; the lock of a dead process on this host (a killed run) is taken
    over with a warning. Released when the run ends, however it ends short of a kill."""

    def __init__(self, out: Path, enabled: bool = True):
        self.path, self.enabled = out / LOCK, enabled
        self.owner = {'pid': os.getpid(), 'host': socket.gethostname()}

    def __enter__(self):
        if not self.enabled:
            return self
        prepare_out_dir(self.path.parent)
        while not self._created():
            holder = self._holder()
            if holder is None:
                continue  # released meanwhile: try again
            if holder.get('host') != self.owner['host'] or self._alive(holder.get('pid')):
                raise UserError(f'{self.path.parent} is in use by process {holder.get("pid")} on '
                                f'{holder.get("host")} (see {self.path}); wait for that run to end, or delete '
                                f'{self.path} if that process is gone')
            self._take_over(holder)
        return self

    def _take_over(self, dead: dict) -> None:
        """Remove the lock of the dead process `dead`, unless another process took it over first:
        two processes on this host may find the same dead lock at once, and the second must not
        delete the first's new lock. The lock is re-read under a lock on the folder (flock, released
        by the kernel however its holder ends); the new lock itself is then created exclusively."""
        with _folder_lock(self.path.parent):
            if self._holder() != dead:
                return  # taken over (or released) meanwhile: the caller looks again
            print(f'warning: taking over {self.path} from process {dead.get("pid")}, which is no longer running '
                  f'(a run that was killed)', file=sys.stderr)
            self.path.unlink(missing_ok=True)

    def __exit__(self, *exc):
        if self.enabled and self._holder() == self.owner:
            self.path.unlink(missing_ok=True)

    def _created(self) -> bool:
        try:
            return self._create()
        except OSError as e:
            raise UserError(f'cannot write to --out {self.path.parent} ({e.strerror}); choose a writable directory')

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, 'w') as f:
                json.dump(self.owner, f)
        except OSError:
            self.path.unlink()
            raise
        return True

    def _holder(self):
        """The lock's {'pid', 'host'}; None when there is no lock. A lock without them is re-read
        for a second (its writer may be writing it), then treated as a killed process's."""
        for _ in range(10):
            try:
                holder = json.loads(self.path.read_text())
                if isinstance(holder, dict) and 'pid' in holder:
                    return holder
            except FileNotFoundError:
                return None
            except ValueError:
                pass
            time.sleep(0.1)
        return {'pid': None, 'host': self.owner['host']}

    def _alive(self, pid) -> bool:
        if not isinstance(pid, int) or pid == os.getpid():  # our own id: a recycled one of a dead process
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True


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
