"""``plantray model create``: a model directory from a label list and initial weights."""

from __future__ import annotations

from dataclasses import dataclass

from plantray.commands.record import check_replaceable, mark_output, utc_now, write_run_record
from plantray.config import ConfigError, JobConfig, field


@dataclass
class ModelCreateConfig(JobConfig):
    """Settings of ``plantray model create``."""

    out: str = field("", positional=True, required=True, help="model directory to write (local or s3://...)")
    labels: str = field("", required=True, help="CSV with scientificName (genus, family, taxonID optional) "
                        "or a text file with one name per line")
    arch: str = field("resnet50", help="torchvision classification architecture")
    weights: str = field("random", help="random, imagenet (torchvision's, downloaded) or a state-dict PATH/URI")
    image_size: int = field(224, help="network input size (centre crop)")
    name: str | None = field(None, help="model name recorded in the card and identifiedBy")
    version: str | None = field(None, help="model version (default: creation date)")
    doi: str | None = field(None, help="DOI of the published model and card (e.g. 10.5281/zenodo.123): becomes "
                            "identifiedByID of every identification")
    url: str | None = field(None, help="URL where the model and its card are described: identifiedByID when no "
                            "--doi, and identificationReferences")
    overwrite: bool = field(False, help="replace an existing model directory")


def create_model(cfg: ModelCreateConfig) -> dict:
    """Builds and saves a model; returns its card (the run record goes beside it).

    Raises:
        ConfigError: unreadable labels, unknown architecture, unavailable weights, existing OUT.
    """
    from plantray import storage
    from plantray.images.presets import EvalPreset
    from plantray.model.artifact import make_card, save_artifact
    from plantray.model.labels import read_labels
    from plantray.model.network import build_model

    storage.check_writable(cfg.out, "OUT")
    if storage.holds_data(cfg.out) and not cfg.overwrite:
        raise ConfigError(f"{cfg.out!r} already holds data; choose a new directory or pass --overwrite")
    if cfg.overwrite:
        check_replaceable(cfg.out, "OUT")
    started = utc_now()
    labels = read_labels(cfg.labels)
    model, provenance = build_model(cfg.arch, len(labels), cfg.weights)
    preset = EvalPreset(crop_size=cfg.image_size, resize_size=round(cfg.image_size * 256 / 224))
    card = make_card(cfg.arch, labels, preset, provenance, cfg.name, cfg.version,
                     training=None, labels_source=cfg.labels, doi=cfg.doi, url=cfg.url)
    mark_output(cfg.out, "model create")
    card = save_artifact(cfg.out, model, labels, card)
    write_run_record(cfg.out, "model create", cfg, {"model": cfg.out, "sha256": card["weights"]["sha256"]}, started)
    return card


CONFIG = ModelCreateConfig
run = create_model
