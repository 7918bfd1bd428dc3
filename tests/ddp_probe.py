"""train.py's main under torchrun, recording this process's class priors after every update and a
digest of every method buffer after every step (tests/test_robustness.py compares the processes)."""
import hashlib
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


def recording_train_step(run, *args, **kwargs):
    result = train_step(run, *args, **kwargs)
    steps.append({name: hashlib.sha256(value.cpu().numpy().tobytes()).hexdigest()
                  for name, value in run.method.state_dict().items()})
    return result


steps, train_step = [], train.train_step
methods.ClassPrior.update = recording_update
train.train_step = recording_train_step
code = train.main(sys.argv[1:])
Path(os.environ['PROBE_OUT'], f'priors_rank{os.environ["RANK"]}.json').write_text(json.dumps(records))
Path(os.environ['PROBE_OUT'], f'method_rank{os.environ["RANK"]}.json').write_text(json.dumps(steps))
sys.exit(code)
