"""Model artifacts: build torchvision networks, save/load a model directory, label tables.

A model is a directory (local or object storage)::

    weights.pt        state dict only, loaded with ``weights_only=True`` (never unpickles objects)
    labels.csv        ordered labels: scientificName[, genus, family, taxonID, train_images]
    model_card.json   architecture, input preprocessing, provenance, SHA-256 of weights.pt
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass, field

import torch
import torchvision

from plantray import __version__
from plantray import io as pio
from plantray.config import ConfigError
from plantray.imaging import EvalPreset

WEIGHTS, LABELS, CARD = "weights.pt", "labels.csv", "model_card.json"
LABEL_COLUMNS = ("scientificName", "genus", "family", "taxonID", "train_images")
IMAGENET_SOURCE = {"license": "BSD-3-Clause (torchvision); ImageNet terms of access apply",
                   "url": "https://pytorch.org/vision/stable/models.html"}


@dataclass
class Labels:
    """The ordered label set of a model; index i is output logit i."""

    names: list[str]
    genus: list[str | None] = field(default_factory=list)
    family: list[str | None] = field(default_factory=list)
    taxon_id: list[str | None] = field(default_factory=list)
    train_images: list[int | None] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.names)
        for name in ("genus", "family", "taxon_id", "train_images"):
            if not getattr(self, name):
                setattr(self, name, [None] * n)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def has_genus(self) -> bool:
        return any(self.genus)

    @property
    def has_family(self) -> bool:
        return any(self.family)

    @property
    def has_counts(self) -> bool:
        return all(c is not None for c in self.train_images)

    def to_csv(self) -> str:
        """CSV text with the standard columns."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(LABEL_COLUMNS)
        for row in zip(self.names, self.genus, self.family, self.taxon_id, self.train_images):
            writer.writerow(["" if v is None else v for v in row])
        return buf.getvalue()


def _none(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def parse_labels(text: str, source: str = "labels") -> Labels:
    """Parses a labels CSV (``scientificName`` column, optional genus/family/taxonID/train_images)
    or a plain text file with one scientific name per line.

    Raises:
        ConfigError: no labels, duplicates, or a CSV without ``scientificName``.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ConfigError(f"{source}: no labels found; give a CSV with a scientificName column or one name per line")
    if "," in lines[0] or lines[0].strip() == "scientificName":
        rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
        if "scientificName" not in (rows[0].keys() if rows else lines[0].split(",")):
            raise ConfigError(f"{source}: CSV has no 'scientificName' column (header: {lines[0]!r})")
        names = [r["scientificName"].strip() for r in rows]
        counts = [int(r["train_images"]) if _none(r.get("train_images")) else None for r in rows]
        labels = Labels(names, [_none(r.get("genus")) for r in rows], [_none(r.get("family")) for r in rows],
                        [_none(r.get("taxonID")) for r in rows], counts)
    else:
        labels = Labels([ln.strip() for ln in lines])
    dupes = {n for n in labels.names if labels.names.count(n) > 1}
    if dupes:
        raise ConfigError(f"{source}: duplicate labels {sorted(dupes)[:5]}; each scientificName must appear once")
    if any(not n for n in labels.names):
        raise ConfigError(f"{source}: empty scientificName in labels")
    return labels


def read_labels(uri: str) -> Labels:
    """Reads labels from a local path or object-storage URI (see :func:`parse_labels`)."""
    try:
        text = pio.read_bytes(uri).decode("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"labels {uri!r} not found; pass --labels with a CSV or text file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"labels {uri!r} is not UTF-8 text; save it as UTF-8 CSV") from None
    return parse_labels(text, uri)


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
    """Refuses an architecture torchvision does not provide."""
    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        close = [a for a in available if arch.split("_")[0] in a][:8]
        raise ConfigError(f"unknown --arch {arch!r}; torchvision classification models include "
                          f"{close or available[:8]}")


def imagenet_state_dict(arch: str) -> dict:
    """torchvision's published ImageNet weights for ``arch``, downloaded to the torch hub cache.

    Raises:
        ConfigError: the weights cannot be downloaded (offline cluster), with the way out.
    """
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
        data = pio.read_bytes(uri)
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
    model = torchvision.models.get_model(arch, weights=None)
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


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def make_card(arch: str, labels: Labels, preset: EvalPreset, provenance: dict, name: str | None = None,
              version: str | None = None, **extra) -> dict:
    """A model card dict; :func:`save_artifact` adds the weights' SHA-256."""
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return {"name": name or f"plantray-{arch}", "version": version or created[:10], "arch": arch,
            "num_classes": len(labels), "input": preset.to_dict(), "weights": provenance,
            "created": created, "plantray_version": __version__, **extra}


def save_artifact(uri: str, model: torch.nn.Module, labels: Labels, card: dict) -> dict:
    """Writes a model directory; returns the final card (with ``weights.sha256``)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    data = buf.getvalue()
    card = {**card, "weights": {**card.get("weights", {}), "file": WEIGHTS, "sha256": sha256(data)}}
    pio.write_bytes(pio.join(uri, WEIGHTS), data)
    pio.write_bytes(pio.join(uri, LABELS), labels.to_csv().encode())
    pio.write_bytes(pio.join(uri, CARD), json.dumps(card, indent=2).encode())
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
    def preset(self) -> EvalPreset:
        return EvalPreset.from_dict(self.card["input"])

    @property
    def identified_by(self) -> str:
        """Darwin Core ``identifiedBy``: the model's name and version, e.g. 'plantray-resnet50 2026-11-27'."""
        return f"{self.card['name']} {self.card['version']} (sha256:{self.sha256[:12]})"

    def build(self) -> torch.nn.Module:
        """The network with these weights, in eval mode, on CPU."""
        model = torchvision.models.get_model(self.card["arch"], weights=None)
        replace_head(model, len(self.labels))
        state = torch.load(io.BytesIO(self.weights), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.eval()


def read_card(uri: str) -> dict:
    """Reads and checks a model card. Raises ConfigError for a missing or malformed model."""
    try:
        card = json.loads(pio.read_bytes(pio.join(uri, CARD)))
    except FileNotFoundError:
        raise ConfigError(f"--model {uri!r} is not a plantray model (no {CARD}); create one with "
                          "'plantray model create' or 'plantray train'") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--model {uri!r}: {CARD} is not valid JSON ({e})") from None
    for key in ("arch", "input", "weights", "name", "version"):
        if key not in card:
            raise ConfigError(f"--model {uri!r}: {CARD} lacks {key!r}")
    return card


def load_artifact(uri: str) -> Artifact:
    """Loads a model directory and verifies the weights' SHA-256 against the card.

    Raises:
        ConfigError: missing files, unreadable labels, or weights that do not match the card.
    """
    card = read_card(uri)
    labels = read_labels(pio.join(uri, LABELS))
    try:
        weights = pio.read_bytes(pio.join(uri, WEIGHTS))
    except FileNotFoundError:
        raise ConfigError(f"--model {uri!r} has no {WEIGHTS}") from None
    if sha256(weights) != card["weights"].get("sha256"):
        raise ConfigError(f"--model {uri!r}: {WEIGHTS} does not match the SHA-256 in {CARD} (corrupt or replaced)")
    if card.get("num_classes", len(labels)) != len(labels):
        raise ConfigError(f"--model {uri!r}: card says {card['num_classes']} classes, labels.csv has {len(labels)}")
    return Artifact(uri, card, labels, weights)
