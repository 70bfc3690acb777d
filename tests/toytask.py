"""A tiny regression task for the training loop's tests (tests/test_training.py, and the torchrun workers of
tests/test_distributed.py, which import it with tests/ on PYTHONPATH): y = sum(x) for x in R^4, an MLP with optional
dropout (the global RNG, so resuming must restore it), validation MSE and -MSE on 32 fixed inputs, safetensors weights."""
from __future__ import annotations

import torch
from torch import nn

from featlab.training.loop import TrainingTask


class RegressionTask(TrainingTask):
    """Subclasses provide ``batches(start_step)`` yielding ``{"x": (B, 4), "y": (B, 1)}``."""

    def __init__(self, dropout: float = 0.0, activation=nn.ReLU):
        self.model = nn.Sequential(nn.Linear(4, 16), activation(), nn.Dropout(dropout), nn.Linear(16, 1))
        self.val_x = torch.randn(32, 4, generator=torch.Generator().manual_seed(99))

    def training_step(self, batch, step):
        loss = (self.model(batch["x"]) - batch["y"]).pow(2).mean()
        return loss, {"abs": loss.detach().sqrt()}

    def validate(self):
        mse = (self.model(self.val_x) - self.val_x.sum(1, keepdim=True)).pow(2).mean()
        return {"neg_mse": -mse, "mse": mse}

    def save_weights(self, path, info):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(path))
        return path
