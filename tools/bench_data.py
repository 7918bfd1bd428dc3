"""Peak memory and time of building the ImageNet-127 split, on a scaled fake at 64x64.

    python -m tools.bench_data [--per-class 200]

Writes the fake into a temporary folder, builds the split in a fresh process and prints,
as the last line, one JSON object: the bytes kept, the size of one batch file, and the peak
resident-memory increase while reading (the original held about three full copies).
"""
import utils.startup  # noqa: F401 (first: a Ctrl-C while the rest imports is one line)
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tools import fake_data
from utils.cli import OneLineParser

MEASURE = '''
import json, sys, time
from dataset import readers

def high_water_kib():  # VmHWM: this process's peak resident memory (ru_maxrss survives exec)
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])

before = high_water_kib()
start = time.time()
images, labels = readers.read_imagenet_train(sys.argv[1], 127, 64)
print(json.dumps({"kept_bytes": images.nbytes, "seconds": round(time.time() - start, 2),
                  "peak_rss_increase_bytes": (high_water_kib() - before) * 1024}))
'''


def main(argv=None):
    parser = OneLineParser(prog='python -m tools.bench_data', description=__doc__.split('\n')[0])
    parser.add_argument('--per-class', type=int, default=200, help='training images per class in the fake, >= 1')
    args = parser.parse_args(argv)
    if args.per_class < 1:
        parser.error(f'--per-class {args.per_class} is not allowed; use an integer >= 1')
    with tempfile.TemporaryDirectory() as root:
        fake_data.write_small_imagenet(root, 127, 64, args.per_class, 2)
        batch = (Path(root) / 'small_imagenet_127_64' / 'train_data_batch_1').stat().st_size
        out = subprocess.run([sys.executable, '-c', MEASURE, root], check=True, capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1]).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result['batch_file_bytes'] = batch
    result['peak_over_kept'] = round(result['peak_rss_increase_bytes'] / result['kept_bytes'], 3)
    print(f"kept {result['kept_bytes'] / 2**20:.0f} MiB, one batch file {batch / 2**20:.0f} MiB, "
          f"peak increase {result['peak_rss_increase_bytes'] / 2**20:.0f} MiB ({result['peak_over_kept']}x kept)")
    print(json.dumps(result))


if __name__ == '__main__':
    main()
