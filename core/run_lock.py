"""run.lock: one process at a time writes a run folder."""
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from utils.errors import UserError

LOCK = 'run.lock'


def prepare_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f'cannot write to --out {out} ({e.strerror}); choose a writable directory')


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
            if self._in_use(holder):
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

    def live_holder(self):
        """The {'pid', 'host'} of the process writing the folder, or None: no lock, or the lock of a
        dead process on this host (a killed run, whose lock the next run takes over)."""
        holder = self._holder()
        return holder if holder is not None and self._in_use(holder) else None

    def _in_use(self, holder: dict) -> bool:
        """A lock's holder is writing: a live process, or one on another host (which cannot be checked)."""
        return holder.get('host') != self.owner['host'] or self._alive(holder.get('pid'))

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
        try:  # a killed process nobody has reaped yet (a container without an init) is a zombie: dead
            return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
        except (OSError, IndexError):  # no /proc (not Linux)
            return True
