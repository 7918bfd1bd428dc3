"""What the backbones share: their initialisation and their one or two linear heads."""
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


def classify(model: nn.Module, features, with_features: bool = False):
    """Logits of the standard head, and of the balanced head (ACR_d) when the model has one; with
    `with_features`, also the pooled penultimate features they are computed from (DASO)."""
    logits = model.fc(features) if model.fc_balanced is None else (model.fc(features), model.fc_balanced(features))
    return (logits, features) if with_features else logits
