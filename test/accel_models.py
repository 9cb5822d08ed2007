"""Image-path modules for the acceleration tests (export, backends, TensorRT cache).

A real timm ViT (the tiny DINO-like test model, random weights, built with
``dynamic_img_size`` like an engine running several input sizes) wrapped like
an engine's image path: RGB in [0,1] -> normalised inside -> dense
L2-normalised patch features (optionally a second output, to cover tuples).
"""
import timm
import torch
import torch.nn.functional as F

import ovseg_ros.testing.tiny_models  # noqa: F401  (registers the tiny timm models)
from ovseg_ros.backends.base import ExportSpec


class DenseViT(torch.nn.Module):
    def __init__(self, two_outputs: bool = False):
        super().__init__()
        self.vit = timm.create_model("ovseg_tiny_vit_patch8", pretrained=False,
                                     dynamic_img_size=True)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.two_outputs = two_outputs

    def forward(self, x):
        tokens = self.vit.forward_features((x - self.mean) / self.std)[:, 1:]
        b, n, d = tokens.shape
        h, w = x.shape[2] // 8, x.shape[3] // 8
        dense = F.normalize(tokens.transpose(1, 2).reshape(b, d, h, w), dim=1)
        return (dense, tokens.mean(1)) if self.two_outputs else dense


def dense_vit(seed: int = 0, **kw) -> DenseViT:
    torch.manual_seed(seed)
    return DenseViT(**kw).eval()


def export_of(model: torch.nn.Module, model_id: str = "dense-vit", **kw) -> ExportSpec:
    """The ExportSpec an engine would give a backend for this image path."""
    return ExportSpec(model, model_id=model_id, **kw)
