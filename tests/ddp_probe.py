"""train.py's main under torchrun, recording this process's class priors after every update
(tests/test_robustness.py compares the processes)."""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import methods  # noqa: E402
import train  # noqa: E402

records = []
update = methods.ClassPrior.update


def recording_update(self):
    update(self)
    records.append({'pi_u': self.pi_u.tolist(), 'pi': self.pi.tolist()})


methods.ClassPrior.update = recording_update
code = train.main(sys.argv[1:])
Path(os.environ['PROBE_OUT'], f'priors_rank{os.environ["RANK"]}.json').write_text(json.dumps(records))
sys.exit(code)
