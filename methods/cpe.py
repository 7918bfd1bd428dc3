"""CPE: Three Heads Are Better Than One: Complementary Experts for Long-Tailed Semi-supervised Learning
(Ma, Elezi, Deng, Dong and Xu, AAAI 2024), as its official code trains it (machengcheng2016/CPE-LTSSL,
semilearn/imb_algorithms/cpe/cpe.py on USB).

Three experts (linear heads) on one WideResNet, each on three BatchNorm branches of its last feature
map (classwise BatchNorm; NetworkOutput.experts). Expert j learns the labeled images with log p_l
times tau_j added to its logits (0, 2, 4: the labeled distribution, uniform, its inverse), and the
unlabeled images from its own pseudo labels (its weak view's logits averaged over the branches, above
the threshold) on the strong view: every confident row on the first branch, those pseudo-labelled
from --cbn-cut1 on (medium and tail classes) on the second, from --cbn-cut2 on (tail) on the third,
averaged over the (row, branch) terms that train. The loss is the sum over the experts; the second
expert's branch mean is evaluated.
"""
import torch
import torch.nn.functional as F

from dataset.data import DATASETS
from methods.base import THRESHOLD, Batch, Flag, Method, StepResult, finite
from methods.common import SMALL_IMAGES
from utils.errors import UserError

EXPERTS = 3
CUTS = {10: (2, 4), 100: (35, 70)}  # --cbn-cut1/2 of its configs by the number of classes (config/classic_cv_imb/)
FLAGS = (
    THRESHOLD,
    *(Flag(f'--expert-tau{j}', dict(type=float, default=tau, help=f'expert {j}: log p_l times this added to its '
                                                                   f'labeled logits ({kind})'),
           'a finite number', finite)
      for j, tau, kind in ((1, 0.0, 'the labeled distribution'), (2, 2.0, 'uniform; the evaluated expert'),
                           (3, 4.0, 'the inverse of the labeled distribution'))),
    Flag('--cbn-cut1', dict(type=int, help='the first pseudo class whose rows train the second BatchNorm branch '
                                           '(default: 2 for 10 classes, 35 for 100, as its configs)'),
         'an integer >= 0', lambda v: v >= 0),
    Flag('--cbn-cut2', dict(type=int, help='the first pseudo class whose rows train the third BatchNorm branch '
                                           '(default: 4 for 10 classes, 70 for 100)'),
         'an integer >= 0', lambda v: v >= 0))


def cuts(args, num_classes: int):
    """(cut1, cut2): the flags', else its configs' for the number of classes."""
    default = CUTS.get(num_classes, (None, None))
    return (default[0] if args.cbn_cut1 is None else args.cbn_cut1,
            default[1] if args.cbn_cut2 is None else args.cbn_cut2)


class CPE(Method):
    """Its experts are NetworkOutput.experts, (rows, experts, branches, classes)."""
    flags = FLAGS
    experts = EXPERTS
    networks = dict.fromkeys(SMALL_IMAGES, 'wideresnet_usb')  # (its wrn_28_2_cbn: USB's WRN-28-2 with the branches)

    @classmethod
    def check_arguments(cls, args) -> None:
        num_classes = DATASETS[args.dataset].num_classes
        cut1, cut2 = cuts(args, num_classes)
        if cut1 is None or cut2 is None:
            raise UserError(f'--version CPE on {args.dataset} ({num_classes} classes) needs --cbn-cut1 and --cbn-cut2 '
                            f'(its configs give them for 10 and 100 classes only)')
        if not cut1 <= cut2 < num_classes:
            raise UserError(f'--cbn-cut1 {cut1} and --cbn-cut2 {cut2} are not allowed for {num_classes} classes; use '
                            f'0 <= cut1 <= cut2 < {num_classes}')

    def __init__(self, args, data, num_features=None):
        super().__init__(args, data, num_features)
        counts = torch.as_tensor(data.labeled_per_class, dtype=torch.float32)
        self.threshold, (self.cut1, self.cut2) = args.threshold, cuts(args, len(counts))
        taus = torch.tensor([args.expert_tau1, args.expert_tau2, args.expert_tau3])
        self.register_buffer('adjust', taus[:, None] * (counts / counts.sum()).log())  # (experts, classes)

    def loss(self, views: Batch) -> StepResult:
        return StepResult(*self.expert_losses(views))

    def expert_losses(self, views: Batch):
        """(the sum of every expert's two losses, the named terms, the second expert's mask and pseudo labels)."""
        x, u = views.labeled, views.unlabeled
        labeled, weak, strong = x.weak.experts, u.weak.experts.detach(), u.strong.experts
        total, terms = 0, {}
        for j in range(EXPERTS):
            loss_x = F.cross_entropy(labeled[:, j].mean(1) + self.adjust[j], x.labels)
            confidence, pseudo_label = torch.softmax(weak[:, j].mean(1), -1).max(-1)
            mask = confidence >= self.threshold
            branches = torch.stack([mask, mask & (pseudo_label >= self.cut1), mask & (pseudo_label >= self.cut2)], 1)
            branches = branches.to(strong.dtype)  # (rows, branches): which (row, branch) terms train
            ce = F.cross_entropy(strong[:, j].flatten(0, 1), pseudo_label.repeat_interleave(3), reduction='none')
            loss_u = (ce.view_as(branches) * branches).sum() / (branches.sum() + 1e-12)
            total = total + loss_x + loss_u
            terms.update({f'loss_x{j + 1}': loss_x, f'loss_u{j + 1}': loss_u})
            if j == 1:  # (the evaluated expert's pseudo labels are the ones logged, as its code)
                result_mask, result_label = mask, pseudo_label
        terms.update(loss_x=terms['loss_x2'], loss_u=terms['loss_u2'])
        return total, terms, result_mask, result_label

    def eval_logits(self, output):
        """The second expert (tau 2) averaged over the branches, unadjusted."""
        return output.experts[:, 1].mean(1)
