"""``plantray review apply``: a review's decisions applied to the predictions, the machine's identification kept.

Reads a decisions file (:mod:`plantray.review.decisions`) and writes new predictions with one row per input row,
each decided row carrying the person's identification and the machine's (:mod:`plantray.review.apply`); for a
nightly table, the decided rows go in as one new Delta commit (:mod:`plantray.review.outputs`). Everything is
checked before anything is written: the file, every name against the model's labels (or ``--checklist``), and
every identificationID against the predictions. Torch and Ray are never imported.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from plantray.commands.record import run_record, utc_now
from plantray.config import ConfigError, JobConfig, field


@dataclass
class ReviewApplyConfig(JobConfig):
    """Settings of ``plantray review apply``."""

    predictions: str = field("", required=True, help="predictions the review was made on: classify's OUTPUT, an "
                             "--aggregate occurrence output, an earlier review apply OUTPUT, or a nightly table")
    decisions: str = field("", required=True, help="the decisions CSV the review page exported")
    output: str | None = field(None, help="applied predictions to write (a Parquet dataset directory); leave it out "
                               "for a nightly table, which takes the decisions as a new commit")
    labels: str | None = field(None, help="labels the names are checked against (labels.csv or a model directory; "
                               "default: the labels of the model named in PREDICTIONS' run record)")
    checklist: str | None = field(None, help="a checklist for names the labels lack (Taxon.tsv, a Darwin Core "
                                  "Archive or a ColDP package, as for labels match)")
    training_manifest: str | None = field(None, help="also write the accepted and corrected images as a training "
                                          "manifest (.parquet or .csv) for plantray train / calibrate")
    overwrite: bool = field(False, help="replace an OUTPUT or manifest an earlier review apply wrote")


def _same(a: str, b: str) -> bool:
    import os

    from plantray import storage

    def norm(u: str) -> str:
        return os.path.abspath(u) if storage.scheme(u) == "file" else u.rstrip("/")

    return norm(a) == norm(b)


def _ours(uri: str) -> bool:
    """Whether ``uri`` (an OUTPUT directory or a manifest file) was written by review apply."""
    from plantray import storage
    from plantray.inference.outputs import PROGRESS

    try:
        if uri.lower().endswith((".parquet", ".csv")) and not storage.get_fs(uri)[0].isdir(storage.get_fs(uri)[1]):
            return _our_manifest(uri)
        return json.loads(storage.read_bytes(storage.join(uri, PROGRESS))).get("command") == "review apply"
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return False


def _our_manifest(uri: str) -> bool:
    import pyarrow.parquet as pq

    from plantray import storage
    from plantray.columns import REVIEW_MANIFEST_METADATA_KEY
    from plantray.review.outputs import MANIFEST_COLUMNS

    fs, path = storage.get_fs(uri)
    with fs.open(path, "rb") as f:
        if uri.lower().endswith(".csv"):
            header = f.readline().decode("utf-8", "replace").strip().replace('"', "").split(",")
            return set(header) <= set(MANIFEST_COLUMNS) and "image_uri" in header
        return REVIEW_MANIFEST_METADATA_KEY in (pq.read_schema(f).metadata or {})


def _check_outputs(cfg: ReviewApplyConfig, table: bool) -> None:
    """Refuses outputs that would lose data or cannot be written, before anything is read in earnest."""
    from plantray import storage

    if table:
        if cfg.output and not _same(cfg.output, cfg.predictions):
            raise ConfigError(f"--predictions {cfg.predictions!r} is a nightly table: the decisions go in as a new "
                              "commit of the table itself; leave out --output")
    elif not cfg.output:
        raise ConfigError("--output is required: the applied predictions are written as a new dataset (PREDICTIONS "
                          "is left as it is)")
    elif _same(cfg.output, cfg.predictions):
        raise ConfigError(f"--output {cfg.output!r} is PREDICTIONS; write the applied predictions to a new directory")
    targets = [u for u in (None if table else cfg.output, cfg.training_manifest) if u]
    for uri in targets:
        if storage.holds_data(uri) and not (cfg.overwrite and _ours(uri)):
            fix = "pass --overwrite to replace it" if _ours(uri) else "it was not written by review apply; choose " \
                                                                      "a new path"
            raise ConfigError(f"{uri!r} already holds data; {fix}")
    if cfg.training_manifest and not cfg.training_manifest.lower().endswith((".parquet", ".csv")):
        raise ConfigError(f"--training-manifest {cfg.training_manifest!r} must end in .parquet or .csv")


def _source_config(p) -> dict:
    """The config of the run that made the predictions (model, input): a classify OUTPUT's run record (that of
    OUTPUT for OUTPUT_occurrences), an applied OUTPUT's source, or a nightly table's newest commit."""
    from plantray.review.inputs import OCCURRENCES_SUFFIX
    from plantray.review.predictions import run_config

    if p.table is not None:
        commit = next((c for c in reversed(p.table.commits()) if c.get("model_uri")), {})
        return {"model": commit.get("model_uri"), "input": commit.get("input")}
    config = run_config(p.uri)
    if not config and p.uri.rstrip("/").endswith(OCCURRENCES_SUFFIX):
        config = run_config(p.uri.rstrip("/")[: -len(OCCURRENCES_SUFFIX)])
    return {k: config.get(k) for k in ("model", "input") if config.get(k)}


def _image_base(config: dict) -> str:
    from plantray import storage
    from plantray.sources.manifest import manifest_format

    source = config.get("input") or ""
    return storage.dirname(source) if source and manifest_format(source) else ""


def _run_id(decisions: list) -> str:
    text = json.dumps([[d.identification_id, d.decision, d.scientific_name, d.identified_by, d.date_identified,
                        d.remarks] for d in decisions])
    return "review-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def review_apply(cfg: ReviewApplyConfig) -> dict:
    """Runs ``plantray review apply``; returns the summary (also in OUTPUT/_plantray_run.json).

    Raises:
        ConfigError: bad paths or flags; ``DecisionsError`` (a ConfigError) for a decisions file that cannot be
            applied: its header, a row, a name no label or checklist has, an identificationID in no row, or a
            row decided twice, with the line number. Nothing is written then.
    """
    from plantray import storage
    from plantray.model.taxa import name_key
    from plantray.review import inputs, naming, outputs
    from plantray.review.apply import Resolved
    from plantray.review.decisions import read_decisions

    started = utc_now()
    decisions = read_decisions(cfg.decisions)
    p = inputs.open_predictions(cfg.predictions)
    _check_outputs(cfg, p.table is not None)
    source = _source_config(p)
    labels_uri = cfg.labels or naming.labels_of(cfg.predictions, source)
    labels = naming.open_labels(labels_uri, cfg.predictions)
    taxa = naming.resolve_names(decisions, labels, labels_uri, cfg.checklist)
    resolved = {d.identification_id: Resolved(d, taxa.get(name_key(d.scientific_name)) if d.scientific_name
                                              else None) for d in decisions}
    run_id = _run_id(decisions)
    manifest = outputs.TrainingManifest(cfg.training_manifest, _image_base(source), "tag" in p.names)
    summary = {"predictions": cfg.predictions, "decisions": cfg.decisions, "labels": labels_uri,
               "decisions_read": len(decisions), "run_id": run_id, "source_config": source}
    if p.table is not None:
        rows = inputs.table_rows(p, resolved)
        if cfg.overwrite and cfg.training_manifest:
            storage.remove(cfg.training_manifest)
        result = outputs.commit_to_table(p, rows, resolved, run_id, manifest,
                                         {"attempt": started.replace(":", "").replace("-", ""),
                                          "operation": "review apply", "decisions": cfg.decisions})
        summary.update(output=cfg.predictions, **result, training_manifest=manifest.close())
        return summary
    by_id, by_occurrence = inputs.targets(p, resolved)
    for uri in (cfg.output, cfg.training_manifest):
        if uri and cfg.overwrite:
            storage.remove(uri)  # checked above: an earlier review apply's
    counts = outputs.rewrite(p, cfg.output, by_id, by_occurrence, manifest,
                             {"command": "review apply", "predictions": cfg.predictions, "decisions": cfg.decisions})
    summary.update(output=cfg.output, **counts, training_manifest=manifest.close())
    storage.write_bytes(storage.join(cfg.output, "_plantray_run.json"),
                        run_record("review apply", cfg, summary, started))
    outputs.finish(cfg.output)
    return summary


def format_summary(summary: dict) -> str:
    """The closing lines printed by the CLI."""
    decided = ", ".join(f"{n} {d}" for d, n in sorted(summary.get("decided", {}).items())) or "none"
    if summary.get("status") == "noop":
        lines = [f"these decisions are already in table {summary['output']} (version {summary['version']}): "
                 "nothing to do"]
    elif "version" in summary:
        lines = [f"applied {summary['decisions_read']} decisions ({decided}) as version {summary['version']} of "
                 f"table {summary['output']}"]
    else:
        lines = [f"applied {summary['decisions_read']} decisions ({decided}) to {summary['rows']} rows -> "
                 f"{summary['output']}"]
    m = summary.get("training_manifest") or {}
    if m:
        skipped = f" ({m['not_species']} above species and {m['no_image']} without an image left out)" if (
            m["not_species"] or m["no_image"]) else ""
        lines.append(f"  training manifest: {m['images']} images -> {m['uri']}{skipped}")
    return "\n".join(lines)


CONFIG = ReviewApplyConfig
run = review_apply
