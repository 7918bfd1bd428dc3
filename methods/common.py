"""What several methods share: logit adjustment and the symmetric KL (SPEC sections 6 and 7)."""
import torch


def logit_adjustment(prior: torch.Tensor, tau: float) -> torch.Tensor:
    """log(prior ** tau + 1e-12), added to (or subtracted from) logits."""
    return torch.log(prior ** tau + 1e-12)


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """0.5 * KL(p || q) + 0.5 * KL(q || p) between two distributions (renormalised)."""
    p, q = (x.double().clamp_min(1e-12) for x in (p, q))
    p, q = p / p.sum(), q / q.sum()
    return float(0.5 * (p * (p / q).log()).sum() + 0.5 * (q * (q / p).log()).sum())
