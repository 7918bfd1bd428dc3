"""What ImageNet-127's evaluation costs beside an epoch of training, on random images.

    python -m tools.bench_eval                 # 64x64, on CUDA when present, else the CPU
    python -m tools.bench_eval --img-size 32

The network is the recipe's ResNet-50 (127 classes); the training step is SimPro's ImageNet step
(batch 32, mu 2: 32 labeled images in one view and 64 unlabeled in two, 160 images, forward and
backward, SGD), an epoch 500 of them; the evaluation is the forward pass of the test images in
batches of 512: the balanced subset (127 classes x 50 = 6,350 images) and every val image (50,000).
The last line of stdout is one JSON object: step_s, eval_image_ms, epoch_s, and for each test set
its projected seconds and its share of an epoch's time (train.py evaluates every val image every
10 epochs and in each of the last 20: core/evaluate.due_test_sets).
"""
import utils.startup  # noqa: F401 (first: a Ctrl-C while the rest imports is one line)
import json
import time

import torch

from models import build_model
from utils.cli import OneLineParser, phase

STEP_IMAGES, EPOCH_STEPS, EVAL_BATCH = 160, 500, 512
PROG = 'python -m tools.bench_eval'
TEST_SETS = {'balanced_test': 127 * 50, 'imbalanced_test': 50000}


def timed(work, device, repeats: int) -> float:
    """Seconds per call of `work`, after one call that warms up."""
    work()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('--img-size', type=int, default=64, choices=(32, 64))
    parser.add_argument('--repeats', type=int, default=3, help='timed calls of each (after one warm-up call), >= 1')
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f'--repeats {args.repeats} is not allowed; use an integer >= 1')
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    model = build_model('resnet50', 127).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train_images = torch.randn(STEP_IMAGES, 3, args.img_size, args.img_size, device=device)
    test_images = torch.randn(EVAL_BATCH, 3, args.img_size, args.img_size, device=device)

    def step():
        model.train()
        loss = model(train_images).logits.logsumexp(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def evaluate():
        model.eval()
        model(test_images)

    phase(PROG, f'timing {1 + args.repeats} training steps of ResNet-50 at {args.img_size}x{args.img_size} on {device} '
                f'(the first warms up)')
    step_s = timed(step, device, args.repeats)
    phase(PROG, f'timing {1 + args.repeats} evaluation batches of {EVAL_BATCH} images')
    image_s = timed(evaluate, device, args.repeats) / EVAL_BATCH
    epoch_s = step_s * EPOCH_STEPS
    result = {'device': str(device), 'img_size': args.img_size, 'step_s': round(step_s, 4),
              'eval_image_ms': round(image_s * 1000, 4), 'epoch_s': round(epoch_s, 1)}
    for name, images in TEST_SETS.items():
        result[f'{name}_s'] = round(images * image_s, 1)
        result[f'{name}_share_of_epoch'] = round(images * image_s / epoch_s, 4)
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
