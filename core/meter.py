"""Per-epoch training statistics, kept on the device so that no step waits for the GPU."""
import torch

from utils.distributed import all_reduce_sum, any_process, world_size
from utils.errors import UserError


class NonFiniteLoss(UserError):
    """A loss term became NaN or infinite: the run stops without saving."""


class EpochMeter:
    """Sums over one epoch of the loss terms, the mask ratio and the pseudo-label accuracy, and
    the first step at which a loss term was not finite."""

    def __init__(self, device):
        self.device = device
        self.names, self.sums, self.bad = None, None, None
        self.counts = torch.zeros(3, device=device)  # masked rows, correct pseudo labels, masked with known label
        self.rows = 0
        self.first_bad_step = torch.full((), -1, device=device)
        self.steps = 0

    def add(self, step, loss, terms, mask, pseudo_label, true_label) -> None:
        values = torch.stack([loss.detach(), *(v.detach() for v in terms.values())]).float()
        if self.names is None:
            self.names = ['loss', *terms]
            self.sums, self.bad = torch.zeros_like(values), torch.zeros_like(values, dtype=torch.bool)
        self.sums += values
        finite = torch.isfinite(values)
        self.bad |= ~finite
        self.first_bad_step.masked_fill_((self.first_bad_step < 0) & ~finite.all(), step)
        known = true_label >= 0
        self.counts += torch.stack([mask.sum(), ((pseudo_label == true_label) & mask & known).sum(),
                                    (mask & known).sum()]).float()
        self.rows += len(mask)
        self.steps += 1

    def check_finite(self, last_good: str) -> None:
        """Stop (on every process) when a loss term was not finite since the epoch started."""
        if self.bad is None or not any_process(bool(self.bad.any()), self.device):
            return
        terms = [n for n, b in zip(self.names, self.bad.tolist()) if b] or ['a loss term (on another process)']
        step = int(self.first_bad_step)
        raise NonFiniteLoss(f'{", ".join(terms)} became non-finite at step {step}{"" if step >= 0 else " (?)"}; '
                            f'stopping without saving. Last good checkpoint: {last_good} (kept as it was)')

    def result(self) -> dict:
        """The epoch's means, over every process."""
        sums, counts = self.sums.clone(), self.counts.clone()
        all_reduce_sum(sums, counts)
        out = {name: float(v) / (self.steps * world_size()) for name, v in zip(self.names, sums)}
        masked, correct, known = counts.tolist()
        out['mask_ratio'] = masked / max(1, self.rows * world_size())
        out['pseudo_label_acc'] = correct / known * 100 if known else None
        return out

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ('names', 'sums', 'bad', 'counts', 'first_bad_step', 'steps', 'rows')}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value.to(self.device) if isinstance(value, torch.Tensor) else value)
