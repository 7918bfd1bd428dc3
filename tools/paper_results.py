"""The numbers of the SimPro paper's Tables 1-3 (top-1 %, mean and std over 3 seeds; std None where
the paper gives none), keyed by method and then by setting:

- ('cifar10' | 'cifar100', setting name, gamma_l): gamma_u = gamma_l (uniform: 1), N1/M1 of the tables;
- ('stl10', gamma_l);
- ('smallimagenet' | 'smallimagenet_1k', image size): the balanced test set (gamma_t = 1);
- ('smallimagenet', image size, 'imbalanced_test'): every val image (gamma_t ~ 286; Table 3's upper
  block, which the paper takes from ACR, and ACR from CoSSL for the FixMatch, DARP, CReST+ and CoSSL rows).

Its ACR-dagger rows are our ACR_d; its STL-10 and ImageNet "ACR" rows are the full ACR. A method
the paper does not report has no entry; a new method adds its block (and says where it comes from).
"""


def _cifar(dataset: str, gamma_l: int, **by_setting) -> dict:
    """{(dataset, setting, gamma_l): (mean, std)}; settings named as keywords (head_tail: 'head-tail')."""
    return {(dataset, setting.replace('_', '-'), gamma_l): value for setting, value in by_setting.items()}


PAPER_TOP1 = {
    'FixMatch': {
        **_cifar('cifar10', 150, consistent=(62.9, 0.36), uniform=(67.6, 2.56), reversed=(59.9, 0.82),
                 middle=(64.3, 0.63), head_tail=(58.3, 1.46)),
        **_cifar('cifar10', 100, consistent=(67.8, 1.13), uniform=(73.0, 3.81), reversed=(62.5, 0.94),
                 middle=(71.7, 0.46), head_tail=(66.6, 0.87)),
        **_cifar('cifar100', 20, consistent=(40.0, 0.96), uniform=(39.6, 1.16), reversed=(36.2, 0.63),
                 middle=(39.7, 0.61), head_tail=(38.2, 0.82)),
        ('stl10', 10): (72.4, 0.71), ('stl10', 20): (64.0, 2.27),
        ('smallimagenet', 32): (38.7, None), ('smallimagenet', 64): (46.7, None),
        ('smallimagenet', 32, 'imbalanced_test'): (29.7, None), ('smallimagenet', 64, 'imbalanced_test'): (42.3, None)},
    'DARP': {('smallimagenet', 32, 'imbalanced_test'): (30.5, None),
             ('smallimagenet', 64, 'imbalanced_test'): (42.5, None)},
    'CReST+': {
        ('smallimagenet', 32, 'imbalanced_test'): (32.5, None), ('smallimagenet', 64, 'imbalanced_test'): (44.7, None),
        **_cifar('cifar10', 150, consistent=(67.5, 0.45), uniform=(74.9, 0.80), reversed=(62.0, 1.18),
                 middle=(58.5, 0.68), head_tail=(59.3, 0.72)),
        **_cifar('cifar10', 100, consistent=(76.3, 0.86), uniform=(82.2, 1.53), reversed=(62.9, 1.39),
                 middle=(71.4, 0.60), head_tail=(67.2, 0.48)),
        **_cifar('cifar100', 20, consistent=(40.1, 1.28), uniform=(37.6, 0.88), reversed=(32.4, 0.08),
                 middle=(36.9, 0.57), head_tail=(35.1, 1.10)),
        ('stl10', 10): (71.5, 0.96), ('stl10', 20): (68.5, 1.88)},
    'DASO': {
        **_cifar('cifar10', 150, consistent=(70.1, 1.81), uniform=(83.1, 0.47), reversed=(64.0, 0.11),
                 middle=(69.0, 0.31), head_tail=(70.5, 0.59)),
        **_cifar('cifar10', 100, consistent=(76.0, 0.37), uniform=(86.6, 0.84), reversed=(71.0, 0.95),
                 middle=(73.1, 0.68), head_tail=(71.1, 0.32)),
        **_cifar('cifar100', 20, consistent=(43.0, 0.15), uniform=(49.4, 0.93), reversed=(44.1, 0.25),
                 middle=(43.1, 1.20), head_tail=(43.8, 0.43)),
        ('stl10', 10): (78.4, 0.80), ('stl10', 20): (75.3, 0.44)},
    'CoSSL': {('smallimagenet', 32, 'imbalanced_test'): (43.7, None),
              ('smallimagenet', 64, 'imbalanced_test'): (53.9, None)},
    'ACR_d': {
        **_cifar('cifar10', 150, consistent=(70.9, 0.37), uniform=(91.9, 0.02), reversed=(83.2, 0.39),
                 middle=(73.8, 0.83), head_tail=(77.6, 0.20)),
        **_cifar('cifar10', 100, consistent=(76.1, 0.42), uniform=(92.5, 0.19), reversed=(85.2, 0.12),
                 middle=(79.3, 0.30), head_tail=(79.3, 0.48)),
        **_cifar('cifar100', 20, consistent=(40.7, 0.57), uniform=(50.2, 0.82), reversed=(44.1, 0.14),
                 middle=(42.4, 0.47), head_tail=(41.1, 0.09)),
        ('smallimagenet', 32): (49.5, None), ('smallimagenet', 64): (56.1, None),
        ('smallimagenet_1k', 32): (13.2, None), ('smallimagenet_1k', 64): (23.4, None)},
    'ACR': {
        ('smallimagenet', 32, 'imbalanced_test'): (57.2, None), ('smallimagenet', 64, 'imbalanced_test'): (63.6, None),
        ('stl10', 10): (83.0, 0.32), ('stl10', 20): (81.5, 0.25),
        ('smallimagenet', 32): (50.6, None), ('smallimagenet', 64): (57.3, None),
        ('smallimagenet_1k', 32): (13.8, None), ('smallimagenet_1k', 64): (23.3, None)},
    'SimPro': {
        **_cifar('cifar10', 150, consistent=(74.2, 0.90), uniform=(93.6, 0.08), reversed=(83.5, 0.95),
                 middle=(82.6, 0.38), head_tail=(81.0, 0.27)),
        **_cifar('cifar10', 100, consistent=(80.7, 0.30), uniform=(93.8, 0.10), reversed=(85.8, 0.48),
                 middle=(84.8, 0.54), head_tail=(83.0, 0.36)),
        **_cifar('cifar100', 20, consistent=(43.1, 0.40), uniform=(52.2, 0.16), reversed=(45.5, 0.34),
                 middle=(43.6, 0.35), head_tail=(44.8, 0.56)),
        ('stl10', 10): (84.5, 0.39), ('stl10', 20): (82.5, 0.25),
        ('smallimagenet', 32): (55.7, None), ('smallimagenet', 64): (63.8, None),
        ('smallimagenet', 32, 'imbalanced_test'): (59.1, None), ('smallimagenet', 64, 'imbalanced_test'): (67.0, None),
        ('smallimagenet_1k', 32): (19.7, None), ('smallimagenet_1k', 64): (25.0, None)},
}


# USB's published table of its long-tailed protocol (microsoft/Semi-supervised-learning
# results/classic_cv_imb.csv, unchanged since commit 44995033c13f1831e572d2c4d470addc84e1aa3a): top-1 %,
# mean and std over 3 seeds of the BEST evaluation over training (every 1024 of 262,144 steps),
# USB's convention, not the SimPro paper's mean of the last 20. Keyed by
# (dataset, N1, gamma_l, M1, gamma_u), gamma_u negative for the reversed order (USB's encoding) and
# M1 None for STL-10 (its whole unlabeled set); the rows of the methods we have (FixMatch, and
# FixMatch w/ CReST+, DARP, DASO, CoSSL; the table's other rows: supervised, CReST without alignment,
# ABC, SAW, Adsh, DebiasPL, and ReMixMatch with each, are left out), and the same figures of a method's own
# released runs of the protocol where it ships them (CPE; its source beside it).
_USB_COLUMNS = (('cifar10', 1500, 100, 3000, 100), ('cifar10', 1500, 100, 3000, -100),
                ('cifar10', 1500, 150, 3000, 150), ('cifar10', 500, 100, 4000, 100),
                ('cifar10', 500, 100, 4000, -100), ('cifar10', 500, 150, 4000, 150),
                ('cifar100', 150, 10, 300, 10), ('cifar100', 150, 10, 300, -10), ('cifar100', 150, 15, 300, 15),
                ('stl10', 150, 10, None, 1.0), ('stl10', 150, 20, None, 1.0))


def _usb(*cells: str) -> dict:
    """{column key: (mean, std)} from the CSV's 'mean±std' cells, in _USB_COLUMNS' order."""
    return {key: tuple(float(x) for x in value.split('±')) for key, value in zip(_USB_COLUMNS, cells, strict=True)}


USB_TOP1 = {
    'FixMatch': _usb('76.69±0.78', '69.95±1.18', '73.01±0.57', '72.41±1.71', '62.1±1.49', '65.37±0.97', '57.76±0.6',
                     '57.56±0.55', '54.29±0.5', '67.7±2.02', '56.9±3.19'),
    'CReST+': _usb('78.25±0.36', '68.81±0.63', '74.59±0.66', '76.38±1.37', '61.59±1.1', '72.0±2.35', '58.13±0.23',
                   '56.75±0.51', '54.65±0.39', '66.4±1.04', '63.49±1.86'),
    'DARP': _usb('78.49±0.49', '69.67±0.65', '74.73±0.3', '74.67±0.76', '63.26±1.33', '68.97±0.81', '58.22±0.23',
                 '58.08±0.44', '54.89±0.42', '64.56±1.24', '56.95±2.76'),
    'DASO': _usb('76.51±0.49', '78.07±0.38', '71.97±0.51', '68.62±0.67', '69.16±1.03', '64.4±0.66', '59.01±0.16',
                 '60.06±0.2', '55.75±0.29', '71.13±1.4', '62.12±4.05'),
    'CoSSL': _usb('85.28±0.23', '75.48±0.98', '82.98±0.12', '82.22±0.27', '70.91±1.5', '78.15±1.6', '59.03±0.39',
                  '58.54±0.49', '56.58±0.73', '71.2±0.53', '66.49±1.46'),
    # CPE (not in USB's table): the best evaluations of its released runs on USB's protocol, seeds 0-2
    # (machengcheng2016/CPE-LTSSL at dedd598, saved_models/classic_cv_imb/fixmatch_cpe_cifar10_*_0_2_4_{0,1,2}/log.txt,
    # 'eval/best_acc'), mean and std with np.std (ddof 0) as its saved_models/classic_cv_imb/compute_mean_std.py;
    # to one decimal its paper's Table 2 (84.4, 82.3, 80.7, 76.8 on the consistent columns). Its runs of the
    # uniform setting (USB's: M1 / C per class) match no row here and are left out.
    'CPE': {('cifar10', 1500, 100, 3000, 100): (84.44, 0.29), ('cifar10', 1500, 100, 3000, -100): (87.09, 0.14),
            ('cifar10', 1500, 150, 3000, 150): (82.25, 0.34), ('cifar10', 500, 100, 4000, 100): (80.65, 0.99),
            ('cifar10', 500, 100, 4000, -100): (83.89, 0.18), ('cifar10', 500, 150, 4000, 150): (76.77, 0.53)},
}
