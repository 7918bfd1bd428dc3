"""What the backbones share: their initialisation, their one or two linear heads and CCL's
projection heads."""
import torch.nn.functional as F
from torch import nn


def init_weights(model: nn.Module, nonlinearity: str) -> None:
    """Kaiming-normal (fan_out) convolutions, BatchNorm weight 1 and bias 0, Xavier-normal linear
    layers with bias 0 (SPEC section 4)."""
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


def classify(model: nn.Module, features, with_features: bool = False):
    """Logits of the standard head, and of the balanced head (ACR_d) when the model has one; with
    `with_features`, also the pooled penultimate features they are computed from (DASO). A model
    with projection heads (CCL) returns in training (logits, balanced logits, the unit-norm projected
    features, the unit-norm projected class centres), in evaluation the two logits."""
    logits = model.fc(features) if model.fc_balanced is None else (model.fc(features), model.fc_balanced(features))
    if model.projection is not None and model.training:
        return (*logits, F.normalize(model.projection(features), dim=1),
                F.normalize(model.centre_projection(model.fc_balanced.weight), dim=1))
    return (logits, features) if with_features else logits
