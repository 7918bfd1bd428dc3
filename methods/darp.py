"""FixMatch w/ DARP (Kim et al., NeurIPS 2020) as the DASO authors' code runs it on FixMatch
(ytaek-oh/daso, lib/algorithm/darp_reproduce.py, the step-based port of bbuing9/DARP's).

DARP keeps the latest weak-view prediction of every image of the unlabeled pool. After a warm-up,
every `period` steps it refines the whole pool at once: it keeps, per class k, only the
int(alpha * c_k) largest entries of column k (rescaled so that they sum to c_k; c the target class
counts of the pool), and then solves the convex problem

    min_P  sum_n w_n KL(P_n || A_n)   s.t.  each row of P sums to 1,  column k sums to c_k,

with w_n = 1 / entropy(A_n), by its dual: alternating the row normalisation with a root search of
each column's multiplier (scipy's secant method, in the official code). A step's pseudo labels
(confidence and argmax) are then read from the latest refinement, not from its own prediction,
until the next one; before the warm-up ends they are FixMatch's.
"""
import math

import torch
import torch.nn.functional as F

from methods.base import OPTIMIZER, THRESHOLD, Batch, Flag, StepResult, finite
from methods.fixmatch import FixMatch
from utils import distributed
from utils.compiler import eager
from utils.errors import UserError

EPS = 1e-6             # the official code's smoothing (entropy, rescaling, removal weights)
SECANT_STEPS = 30      # optimize.newton's maxiter in the official solver
FLAGS = (  # the defaults are DASO's (lib/config/defaults.py, ALGORITHM.DARP) and DARP's README's
    THRESHOLD, OPTIMIZER,
    Flag('--darp-warmup-ratio', dict(type=float, default=0.4,
                                     help='fraction of --total-steps of plain FixMatch before the refinement '
                                          '(WARMUP_RATIO; DARP: 200 of 500 epochs)'),
         'a number in [0, 1]', lambda v: finite(v) and 0 <= v <= 1),
    Flag('--darp-period', dict(type=int, default=10, help='steps between refinements of the pool (PER_ITERS; '
                                                          "DARP's --num_iter)"),
         'an integer >= 1', lambda v: v >= 1),
    Flag('--darp-iters', dict(type=int, default=10, help="iterations T of the refinement's solver "
                                                         "(NUM_DARP_ITERS; DARP's --iter_T)"),
         'an integer >= 1', lambda v: v >= 1),
    Flag('--darp-alpha', dict(type=float, default=2.0,
                              help='entries kept per class before the solver: int(alpha * c_k) (ALPHA)'),
         'a finite number > 0', lambda v: finite(v) and v > 0),
    Flag('--darp-tol', dict(type=float, default=0.1,
                            help="tolerance of the secant search per class (DASO's 0.1; DARP's code: 0.3 for "
                                 'CIFAR-100 and STL-10)'),
         'a finite number > 0', lambda v: finite(v) and v > 0),
    Flag('--darp-target', dict(choices=('true', 'labeled'), default='true',
                               help="the class counts c the pool's pseudo labels are aligned to: the pool's true "
                                    "counts (DASO's code where the two distributions match; an oracle where it loads "
                                    "DARP's estimate), or the labeled distribution scaled to the pool (DARP's own "
                                    'code without --est; STL-10, whose pool has no labels)')))


def removal(predictions: torch.Tensor, target: torch.Tensor, alpha: float) -> torch.Tensor:
    """DARP's removal of noisy entries (estimate_pseudo): per class k only the int(alpha * c_k)
    largest entries of column k stay (ties: the earlier row), scaled so that they sum to c_k; every
    entry + 1e-6, rows renormalised."""
    n = len(predictions)
    kept = (alpha * target).long()  # float32 product, truncated, as the reference
    order = predictions.argsort(dim=0, descending=True, stable=True)
    keep = torch.zeros_like(predictions).scatter_(
        0, order, (torch.arange(n, device=predictions.device)[:, None] < kept).to(predictions.dtype))
    weights = (target.to(predictions.dtype) + EPS) / ((predictions * keep).sum(0) + EPS)
    scaled = predictions * keep * weights + EPS
    return scaled / scaled.sum(1, keepdim=True)


def secant(g, x0: torch.Tensor, tol: float, steps: int = SECANT_STEPS) -> torch.Tensor:
    """A root of each entry of the vector function g by scipy.optimize.newton's secant method (no
    derivative, as the official call), from x0, all entries at once: the second point
    x0 (1 + 1e-4) +- 1e-4, stop at the first step shorter than tol (or, where g does not change, the
    midpoint). Where scipy raises after `steps` steps, the last iterate is kept."""
    p0 = x0
    p1 = x0 * (1 + 1e-4)
    p1 = torch.where(p1 >= 0, p1 + 1e-4, p1 - 1e-4)
    q0, q1 = g(p0), g(p1)
    swap = q1.abs() < q0.abs()
    p0, p1, q0, q1 = torch.where(swap, p1, p0), torch.where(swap, p0, p1), torch.where(swap, q1, q0), \
        torch.where(swap, q0, q1)
    root, done = p1.clone(), torch.zeros_like(p1, dtype=torch.bool)
    for _ in range(steps):
        flat = q1 == q0
        p = torch.where(q1.abs() > q0.abs(), (-q0 / q1 * p1 + p0) / (1 - q0 / q1),
                        (-q1 / q0 * p0 + p1) / (1 - q1 / q0))
        p = torch.where(flat, (p0 + p1) / 2, p)
        root = torch.where(done, root, p)
        done = done | flat | ((p - p1).abs() <= tol)
        p0, q0, p1 = p1, q1, torch.where(done, p1, p)  # (a finished entry stops moving)
        q1 = g(p1)
    return root


@eager  # (--compile leaves it eager: its loops would be unrolled into one huge graph)
def refine(predictions: torch.Tensor, target: torch.Tensor, iters: int, tol: float) -> torch.Tensor:
    """DARP's solver (opt_solver) on the rows A of `predictions` (after removal) and column sums c =
    `target`, in float64: with A_e = A / e and w_n = 1 / entropy(A_n), alternate
    x = 1 / sum_k A_e y (rows) and, per class k, nu_k with sum_n A_e[n, k] x_n exp(-nu_k / w_n) = c_k
    (the secant search from the last nu, first from 0; y = exp(-nu / w), first with nu = 1); the
    result A_e x y has rows summing to 1 and columns near c."""
    a = predictions.double()
    w = 1 / -(a * torch.log(a + EPS)).sum(1)
    a_e, c = a / math.e, target.double()
    y = torch.exp(-1 / w)[:, None].expand_as(a)
    nu = torch.zeros(a.shape[1], dtype=a.dtype, device=a.device)
    for _ in range(iters):
        x = 1 / (a_e * y).sum(1)
        mass = a_e * x[:, None]
        nu = secant(lambda v: (mass * torch.exp(-v[None] / w[:, None])).sum(0) - c, nu, tol)
        y = torch.exp(-nu[None] / w[:, None])
    x = 1 / (a_e * y).sum(1)
    return a_e * x[:, None] * y


class DARP(FixMatch):
    """FixMatch whose pseudo labels, after the warm-up, come from DARP's refinement of the pool's
    predictions. State (buffers): the step, the latest prediction of every pool image (uniform until
    it is seen), the confidence and hard label of every pool image in the latest refinement
    (1 / C and class 0 before the first, as the official uniform matrix), and the target counts."""
    flags = FLAGS

    @classmethod
    def idle_parts(cls, args, steps: int) -> list:
        warmup = int(args.total_steps * args.darp_warmup_ratio)
        first = (warmup // args.darp_period + 1) * args.darp_period
        if first > steps:
            return [f'the refinement never runs (the first is at step {first}, after the warm-up of {warmup} steps '
                    f'of --darp-warmup-ratio {args.darp_warmup_ratio}; the run has {steps})']
        return []

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        pool, num_classes = len(data.unlabeled_idx), data.num_classes
        self.warmup = int(args.total_steps * args.darp_warmup_ratio)  # int(max_iters * ratio), as DASO
        self.period, self.iters = args.darp_period, args.darp_iters
        self.alpha, self.tol = args.darp_alpha, args.darp_tol
        if args.darp_target == 'true':
            if data.unlabeled_per_class is None:
                raise UserError(f'--darp-target true needs the class counts of the pool, which {data.name} does not '
                                f'have; use --darp-target labeled')
            counts = torch.as_tensor(data.unlabeled_per_class, dtype=torch.float64)
        else:
            counts = torch.as_tensor(data.labeled_per_class, dtype=torch.float64)
        # c: class counts summing to the pool size (the true counts exactly), float32 as the reference
        self.register_buffer('target', (pool * counts / counts.sum()).float())
        self.register_buffer('step', torch.zeros((), dtype=torch.long))
        self.register_buffer('predictions', torch.full((pool, num_classes), 1 / num_classes))
        self.register_buffer('refined_confidence', torch.full((pool,), 1 / num_classes))
        self.register_buffer('refined_label', torch.zeros(pool, dtype=torch.long))
        self.host_step = 0  # the step on the host, so that no step reads the device to know if it refines

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.host_step = int(state_dict[prefix + 'step'])  # (a checkpoint is read on the host)

    def loss(self, views: Batch) -> StepResult:
        x, u = views.labeled, views.unlabeled
        confidence, pseudo_label = self.pseudo_labels(torch.softmax(u.weak.logits.detach(), dim=-1), u.index)
        mask = confidence >= self.threshold
        loss_x = F.cross_entropy(x.weak.logits, x.labels)
        loss_u = (F.cross_entropy(u.strong.logits, pseudo_label, reduction='none') * mask).mean()
        return StepResult(loss_x + loss_u, {'loss_x': loss_x, 'loss_u': loss_u}, mask, pseudo_label)

    @torch.no_grad()
    def pseudo_labels(self, p: torch.Tensor, u_index: torch.Tensor):
        """(confidence, hard label) of the batch: FixMatch's in the warm-up; then those of the latest
        refinement of the pool (which runs now every `period` steps), as the official code."""
        self.step += 1
        self.host_step += 1
        rows, gathered = distributed.all_gather_cat(u_index), distributed.all_gather_cat(p.float())
        self.predictions[rows] = gathered  # every process's batch: the pools stay identical
        if self.host_step <= self.warmup:
            return p.max(dim=-1)
        if self.host_step % self.period == 0:
            refined = refine(removal(self.predictions, self.target, self.alpha), self.target, self.iters, self.tol)
            confidence, label = refined.max(1)
            self.refined_confidence.copy_(confidence)
            self.refined_label.copy_(label)
        return self.refined_confidence[u_index], self.refined_label[u_index]

    def unlabeled_prior(self) -> torch.Tensor:
        """The target counts c, normalised: what the pseudo labels are aligned to."""
        return self.target / self.target.sum()

    def metrics(self) -> dict:
        return {'darp_refining': self.host_step > self.warmup}
