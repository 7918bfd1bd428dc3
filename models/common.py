"""What the backbones share: their initialisation, their one or two linear heads, CCL's
projection heads and their output, one named structure whatever the heads."""
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn


WHOLE = ('centres', 'classifier')  # the fields that are not per row


class NetworkOutput(NamedTuple):
    """What a network's forward returns: a field is None where the network has no such head or
    its caller did not ask for it."""
    logits: torch.Tensor                        # the linear head's logits, (rows, classes)
    balanced: Optional[torch.Tensor] = None     # the balanced head's logits (two_heads: ACR_d, ACR, CCL)
    features: Optional[torch.Tensor] = None     # the pooled features the heads read (with_features)
    projection: Optional[torch.Tensor] = None   # CCL's unit-norm projected features (in training), BaCon's projection
    centres: Optional[torch.Tensor] = None      # CCL's unit-norm projected class centres, (classes, width)
    experts: Optional[torch.Tensor] = None      # CPE's experts on each BatchNorm branch, (rows, experts, 3, classes)
    depths: Optional[torch.Tensor] = None       # Meta-Expert's pooled features of the stem and each group, concatenated
    classifier: Optional[torch.Tensor] = None   # the linear head's weight, (classes, width), with the features: the
    # logits of other features are logits + (other - features) @ classifier.T (CPG's noisy copies of features)

    def rows(self, start: int, stop: int) -> 'NetworkOutput':
        """The output of rows start..stop-1 of the batch (the class centres and the head's weight whole)."""
        return NetworkOutput(*(t if t is None or name in WHOLE else t[start:stop]
                               for name, t in zip(self._fields, self)))

    def float(self) -> 'NetworkOutput':
        return NetworkOutput(*(None if t is None else t.float() for t in self))


def init_weights(model: nn.Module, nonlinearity: str) -> None:
    """Kaiming-normal (fan_out) convolutions, BatchNorm weight 1 and bias 0, Xavier-normal linear
    layers with bias 0 (LeapLabTHU/SimPro SimPro/models/wideresnet.py)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity=nonlinearity)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1.0)
            nn.init.constant_(m.bias, 0.0)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.constant_(m.bias, 0.0)


def projection_heads(width: int):
    """CCL's two projection MLPs, width -> width -> 2 width with BatchNorm1d and ReLU between
    (zhouzihao11/CCL models/wideresnet.py): one projects the pooled features, the other the rows
    of the balanced head's weight, the learnable class centres."""
    def mlp():
        return nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                             nn.Linear(width, 2 * width))
    return mlp(), mlp()


def classify(model: nn.Module, features, with_features: bool = False) -> NetworkOutput:
    """The output of the heads on the pooled `features`: the standard head's logits, the balanced
    head's (ACR_d) when the model has one, the features themselves `with_features` (DASO, CoSSL)
    and the head's weight with them (CPG), and, in training, the projections of a model with projection
    heads (CCL)."""
    logits = model.fc(features)
    balanced = None if model.fc_balanced is None else model.fc_balanced(features)
    projection = centres = None
    if model.projection is not None and model.training:
        projection = F.normalize(model.projection(features), dim=1)
        centres = F.normalize(model.centre_projection(model.fc_balanced.weight), dim=1)
    return NetworkOutput(logits, balanced, features if with_features else None, projection, centres,
                         classifier=model.fc.weight if with_features else None)
