"""ACR (Wei and Gan, CVPR 2023, Gank0078/ACR): ACR_d plus the dynamic tau1 from the anchor
distributions (Gank0078/ACR train.py)."""
from methods.acr_d import ACRd
from methods.common import logit_adjustment


class ACR(ACRd):
    """ACR_d whose adjustment of the standard head's pseudo labels, a_1 = log(p_l ** tau1), follows
    the estimate of the unlabeled distribution: at the start of every epoch past --est-epoch,
    tau1 = --tau1 * softmax(mean anchor KLs of the last epoch)[consistent], so a pool far from the
    labeled distribution (uniform, reversed) gets a stronger adjustment. a_12 and a_2 stay fixed."""

    def set_tau1(self, tau1: float) -> None:
        super().set_tau1(tau1)
        self.adjust_1.copy_(logit_adjustment(self.p_l, tau1))
