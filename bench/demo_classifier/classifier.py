"""A tiny CNN that names the shape in a demo-model picture, trained on the same procedural data."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS = Path(__file__).resolve().parent / "shape_cnn.safetensors"
SHAPES = ("circle", "square", "triangle", "star")  # the order of the output logits
INPUT_SIZE = 64


def make_classifier() -> nn.Module:
    def block(c_in, c_out):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(),
                             nn.MaxPool2d(2))
    # Four blocks: 64 -> 4 pixels; global pooling makes it indifferent to where the shape sits.
    return nn.Sequential(block(3, 16), block(16, 32), block(32, 48), block(48, 64),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, len(SHAPES)))


def to_input(pictures: np.ndarray) -> torch.Tensor:
    """uint8 (N, 64, 64, 3) -> float (N, 3, 64, 64) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pictures)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def load_classifier() -> nn.Module:
    from safetensors.torch import load_file
    model = make_classifier()
    model.load_state_dict(load_file(WEIGHTS))
    return model.eval()


@torch.no_grad()
def classify_shapes(model: nn.Module, images) -> list[str]:
    """Shape names for PIL images (resized to 64x64 when rendered larger)."""
    pictures = np.stack([np.asarray(image.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE))) for image in images])
    return [SHAPES[i] for i in model(to_input(pictures)).argmax(dim=1).tolist()]
