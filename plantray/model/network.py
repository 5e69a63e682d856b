"""torchvision networks: building them with a new head, and running them on a device."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
import torch
import torchvision

from plantray import storage
from plantray.config import ConfigError
from plantray.model.precision import resolve_precision
from plantray.model.tiny import ARCHS as TINY_ARCHS

IMAGENET_SOURCE = {"license": "BSD-3-Clause (torchvision); ImageNet terms of access apply",
                   "url": "https://pytorch.org/vision/stable/models.html"}

if TYPE_CHECKING:  # the artifact builds networks; only its type is needed here
    from plantray.model.artifact import Artifact


def head_name(model: torch.nn.Module) -> str:
    """Name of the classifier head, the last ``nn.Linear`` (``fc`` for ResNets)."""
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not names:
        raise ConfigError("architecture has no Linear classifier head to replace")
    return names[-1]


def set_head(model: torch.nn.Module, head: torch.nn.Module) -> torch.nn.Module:
    """Puts ``head`` in place of the classifier head; returns the model."""
    parent_name, _, attr = head_name(model).rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, head)
    return model


def replace_head(model: torch.nn.Module, num_classes: int) -> torch.nn.Module:
    """Replaces the head of any torchvision classifier with a new ``nn.Linear`` of ``num_classes``."""
    old = model.get_submodule(head_name(model))
    return set_head(model, torch.nn.Linear(old.in_features, num_classes))


def head_prefix(model: torch.nn.Module) -> str:
    """Name prefix of the classifier head parameters (e.g. ``fc.`` for ResNets)."""
    return head_name(model) + "."


def check_arch(arch: str) -> None:
    """Refuses an architecture neither torchvision nor plantray (:mod:`plantray.model.tiny`) provides."""
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available and arch not in TINY_ARCHS:
        close = [a for a in available if arch.split("_")[0] in a][:8]
        raise ConfigError(f"unknown --arch {arch!r}; torchvision classification models include "
                          f"{close or available[:8]} (and plantray's {sorted(TINY_ARCHS)} for smoke tests)")


def get_network(arch: str) -> torch.nn.Module:
    """An untrained ``arch`` with its original head: torchvision's, or one of plantray's tiny networks."""
    if arch in TINY_ARCHS:
        return TINY_ARCHS[arch]()
    return torchvision.models.get_model(arch, weights=None)


def imagenet_state_dict(arch: str) -> dict:
    """torchvision's published ImageNet weights for ``arch``, downloaded to the torch hub cache.

    Raises:
        ConfigError: the weights cannot be downloaded (offline cluster), with the way out.
    """
    if arch in TINY_ARCHS:
        raise ConfigError(f"{arch} has no ImageNet weights (it is plantray's network for smoke tests); use "
                          "--init random (--weights random for model create) or a state-dict path")
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        return weights.get_state_dict(progress=False)
    except Exception as e:  # URLError, HTTPError, socket errors: all mean "no download here"
        raise ConfigError(
            f"could not download torchvision's ImageNet weights for {arch} ({type(e).__name__}: {e}). "
            f"On an offline machine, download {weights.url} elsewhere and pass its path or s3:// URI "
            "instead of 'imagenet' (--weights/--init PATH)") from None


def load_state_dict(uri: str) -> dict:
    """Loads a state dict from a path/URI without unpickling arbitrary objects."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise ConfigError(f"weights {uri!r} not found; give an existing state-dict file") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"weights {uri!r} is not a loadable state dict ({e}); save one with "
                          "torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training checkpoint
    return state


def build_model(arch: str, num_classes: int, init: str = "random") -> tuple[torch.nn.Module, dict]:
    """Builds ``arch`` with a new head of ``num_classes``, initialised from ``init``.

    Args:
        arch: torchvision model name, e.g. ``resnet50``.
        num_classes: size of the new classifier head.
        init: ``random``, ``imagenet`` or a path/URI of a state dict (backbone weights are
            loaded; a head of another size is left freshly initialised).
    Returns:
        The model and a provenance dict for the card's ``weights`` section.
    """
    check_arch(arch)
    model = get_network(arch)
    if init == "random":
        replace_head(model, num_classes)
        return model, {"init": "random"}
    state = imagenet_state_dict(arch) if init == "imagenet" else load_state_dict(init)
    prefix = head_prefix(model)
    own = model.state_dict()
    same_head = all(k in state and state[k].shape == own[k].shape for k in own if k.startswith(prefix))
    if not same_head:
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith(prefix)]:
        raise ConfigError(f"--init {init!r} does not match {arch}: {len(missing)} missing, "
                          f"{len(unexpected)} unexpected keys (e.g. {(list(missing) + list(unexpected))[:3]})")
    replace_head(model, num_classes)
    source = IMAGENET_SOURCE if init == "imagenet" else {"uri": init}
    return model, {"init": init, **source}


def normalize(batch, mean, std):
    """uint8 NHWC torch tensor -> float NCHW normalised, on the tensor's device."""
    import torch

    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)


class FP32Head(torch.nn.Module):
    """A classifier head that runs in fp32 inside a bf16 autocast region.

    bf16 logits keep 8 significant bits, so close classes tie exactly and the Top-1 flips: 0.8% of
    images in bench/precision.py (ResNet50 at 224), all of them ties; with this head, 0.2%. The head
    is a tiny share of the FLOPs (bf16 speed-up x1.96 with it, x2.07 without, in separate runs).
    """

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.head(x.float())


class Network:
    """A model on a device, ready for uint8 NHWC batches: normalisation, precision, memory format.

    Args:
        artifact: the loaded model directory.
        device: where to run.
        precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (see :func:`resolve_precision`).
        threads: torch intra-op threads on CPU (None keeps torch's default).
    """

    def __init__(self, artifact: Artifact, device: torch.device, precision: str = "fp32",
                 threads: int | None = None):
        if threads and device.type == "cpu":
            torch.set_num_threads(threads)
        self.device, self.precision = device, resolve_precision(precision, device)
        self.preset = artifact.preset
        self.model = artifact.build().to(device)
        if self.precision == "bf16":
            head = self.model.get_submodule(head_name(self.model))
            set_head(self.model, FP32Head(head))
        # channels_last lets cuDNN/oneDNN pick their fastest convolution kernels.
        self.model = self.model.to(memory_format=torch.channels_last)
        self.features: torch.Tensor | None = None

    @property
    def feature_size(self) -> int:
        """Size of the penultimate-layer vector: the classifier head's input."""
        return self.model.get_submodule(head_name(self.model)).in_features

    def keep_features(self) -> None:
        """From now on each forward also keeps the classifier head's input (the pooled penultimate-layer
        features, float32 ``[N, feature_size]`` on CPU) in :attr:`features`: embeddings and logits come from
        the same forward pass. A forward pre-hook on the head (the last ``nn.Linear``) sees it for any
        torchvision classifier, inside the fp32 head of a bf16 network too."""
        def store(_module, args):
            self.features = args[0].detach().float().cpu()

        self.model.get_submodule(head_name(self.model)).register_forward_pre_hook(store)

    @torch.inference_mode()
    def logits(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 logits [N, C] on CPU (before any softmax or temperature)."""
        x = torch.from_numpy(images)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = normalize(x, self.preset.mean, self.preset.std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.model(x)
        return logits.float().cpu()

    def probabilities(self, images: np.ndarray, temperature: float = 1.0) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float32 softmax probabilities [N, C] on CPU.

        Args:
            images: the batch.
            temperature: the logits are divided by it before the softmax (temperature scaling, Guo et
                al. 2017; the model card's ``calibration.temperature``); 1.0 is the raw softmax.
        """
        return softmax(self.logits(images), temperature)


def softmax(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over the last axis of ``logits / temperature`` (float32)."""
    return torch.softmax(logits.float() / temperature, dim=-1)
