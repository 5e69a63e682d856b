"""Model artifacts: build torchvision networks, save/load a model directory, label tables.

A model is a directory (local or object storage)::

    weights.pt        state dict only, loaded with ``weights_only=True`` (never unpickles objects)
    labels.csv        ordered labels: scientificName[, genus, family, taxonID, train_images]
    model_card.json   architecture, input preprocessing, provenance, SHA-256 of weights.pt, and
                      ``calibration`` (the temperature, when ``plantray calibrate`` fitted one)

Calibration is a card-only change: it never touches weights.pt, so the weights' SHA-256 (the
``model_sha256`` column, and nightly's "same model" key) names the network, not its temperature.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from plantray import __version__, storage
from plantray.config import ConfigError
from plantray.images.presets import EvalPreset
from plantray.model.labels import Labels, read_labels

if TYPE_CHECKING:  # torch only where weights are saved or built: reading a card must not cost its import
    import torch

WEIGHTS, LABELS, CARD = "weights.pt", "labels.csv", "model_card.json"


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def make_card(arch: str, labels: Labels, preset: EvalPreset, provenance: dict, name: str | None = None,
              version: str | None = None, **extra) -> dict:
    """A model card dict; :func:`save_artifact` adds the weights' SHA-256."""
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return {"name": name or f"plantray-{arch}", "version": version or created[:10], "arch": arch,
            "num_classes": len(labels), "input": preset.to_dict(), "weights": provenance,
            "created": created, "plantray_version": __version__, "taxonomy": labels.taxonomy(), **extra}


def save_artifact(uri: str, model: torch.nn.Module, labels: Labels, card: dict) -> dict:
    """Writes a model directory; returns the final card (with ``weights.sha256``)."""
    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    data = buf.getvalue()
    card = {**card, "weights": {**card.get("weights", {}), "file": WEIGHTS, "sha256": sha256(data)}}
    storage.write_bytes(storage.join(uri, WEIGHTS), data)
    storage.write_bytes(storage.join(uri, LABELS), labels.to_csv().encode())
    storage.write_bytes(storage.join(uri, CARD), json.dumps(card, indent=2).encode())
    return card


@dataclass
class Artifact:
    """A loaded model directory: card, labels and raw weight bytes (verified against the card)."""

    uri: str
    card: dict
    labels: Labels
    weights: bytes

    @property
    def sha256(self) -> str:
        return self.card["weights"]["sha256"]

    @property
    def calibration(self) -> dict | None:
        """The card's ``calibration`` section, or None for a model never calibrated."""
        return self.card.get("calibration")

    @property
    def temperature(self) -> float:
        """The logits' divisor before the softmax: the fitted temperature, 1.0 when uncalibrated."""
        return float(self.calibration["temperature"]) if self.calibration else 1.0

    @property
    def preset(self) -> EvalPreset:
        return EvalPreset.from_dict(self.card["input"])

    def build(self) -> torch.nn.Module:
        """The network with these weights, in eval mode, on CPU."""
        import torch

        from plantray.model.network import get_network, replace_head

        model = get_network(self.card["arch"])
        replace_head(model, len(self.labels))
        state = torch.load(io.BytesIO(self.weights), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.eval()


def read_card(uri: str) -> dict:
    """Reads and checks a model card. Raises ConfigError for a missing or malformed model."""
    try:
        with storage.named(uri, "--model"):
            card = json.loads(storage.read_bytes(storage.join(uri, CARD)))
    except FileNotFoundError:
        raise ConfigError(f"--model {uri!r} is not a plantray model (no {CARD}); create one with "
                          "'plantray model create' or 'plantray train'") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--model {uri!r}: {CARD} is not valid JSON ({e})") from None
    for key in ("arch", "input", "weights", "name", "version"):
        if key not in card:
            raise ConfigError(f"--model {uri!r}: {CARD} lacks {key!r}")
    return card


def write_calibration(uri: str, calibration: dict) -> dict:
    """Puts ``calibration`` into the model card at ``uri`` (replacing any earlier one); returns the card.

    Only model_card.json is rewritten: weights.pt, labels.csv and the weights' SHA-256 stay as they are.

    Args:
        uri: the model directory.
        calibration: ``{"method": "temperature", "temperature": T, ...}`` (see plantray.commands.calibrate).
    """
    card = {**read_card(uri), "calibration": calibration}
    storage.write_bytes(storage.join(uri, CARD), json.dumps(card, indent=2).encode())
    return card


def _check_calibration(uri: str, card: dict) -> None:
    calibration = card.get("calibration")
    if calibration is None:
        return
    temperature = calibration.get("temperature") if isinstance(calibration, dict) else None
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ConfigError(f"--model {uri!r}: {CARD} has calibration.temperature {temperature!r}; it must be a "
                          "number > 0 (re-run 'plantray calibrate', or delete the calibration section)")


def load_artifact(uri: str) -> Artifact:
    """Loads a model directory and verifies the weights' SHA-256 against the card.

    Raises:
        ConfigError: missing files, unreadable labels, or weights that do not match the card.
    """
    card = read_card(uri)
    labels = read_labels(storage.join(uri, LABELS))
    try:
        weights = storage.read_bytes(storage.join(uri, WEIGHTS))
    except FileNotFoundError:
        raise ConfigError(f"--model {uri!r} has no {WEIGHTS}") from None
    if sha256(weights) != card["weights"].get("sha256"):
        raise ConfigError(f"--model {uri!r}: {WEIGHTS} does not match the SHA-256 in {CARD} (corrupt or replaced)")
    if card.get("num_classes", len(labels)) != len(labels):
        raise ConfigError(f"--model {uri!r}: card says {card['num_classes']} classes, labels.csv has {len(labels)}")
    _check_calibration(uri, card)
    return Artifact(uri, card, labels, weights)
