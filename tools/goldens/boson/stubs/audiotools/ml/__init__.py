"""Stub: the vendored DAC subclasses audiotools.ml.BaseModel only for its (unused) DAC class."""
import torch.nn as nn
class BaseModel(nn.Module):
    pass
