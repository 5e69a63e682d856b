"""``plantray evaluate``: the paper's external-test protocol (ten-crop testing, Table 1) on Ray.

For each model, every test set is read (manifest, image tree or archive; local or object storage),
restricted to species the model knows and saw MORE than ``--min-train-images`` times in training
(as the paper keeps labels with >12 training images; :mod:`plantray.evaluation.labelfilter`), cropped
in the loader's CPU tasks, scored by an actor pool that averages the softmax over the crops of each
image, and written as per-image Parquet. The metrics are then computed from that Parquet
(:mod:`plantray.evaluation.score`), so the report can always be recomputed from it.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from plantray import console
from plantray.commands.options import ModelOptions, check_model_options, load_options, location_prior
from plantray.commands.record import check_replaceable, mark_output, utc_now, write_run_record
from plantray.config import ConfigError, check, field
from plantray.images.presets import TTA_MODES

log = logging.getLogger(__name__)
PREDICTIONS = "predictions"
OOD_SCORE = "max softmax probability"


@dataclass
class EvaluateConfig(ModelOptions):
    """Settings of ``plantray evaluate``: the shared model options plus test sets and the protocol."""

    compare: list[str] = field([], help="another model evaluated on the same test sets (repeatable)")
    test: list[str] = field([], required=True, help="test set as NAME=DATA: a manifest with image_uri and "
                            "scientificName (optional tag/genus/family) or an ImageFolder tree (repeatable)")
    output: str = field("", required=True, help="report directory (local or s3://...)")
    tta: str = field("random-ten-crop", choices=list(TTA_MODES),
                     help="test-time crops: none/center = one centre crop; ten-crop = corners + centre and "
                     "mirrors; random-ten-crop = the paper's ten random crops, seeded per image")
    min_train_images: int = field(12, help="keep only species with MORE training images than this (paper: 12)")
    seed: int = field(0, help="seed of the random crops and of the bootstrap")
    bootstrap: int = field(1000, help="bootstrap replicates for the 95%% intervals (0 = off)")
    overwrite: bool = field(False, help="replace an OUTPUT that already holds data")
    ood: list[str] = field([], help="out-of-distribution set as NAME=DATA (images of no plant, species the model "
                           "never learned; labels ignored): reports how well the max softmax probability "
                           "separates the test sets (known) from it: AUROC and FPR at 95%% TPR (repeatable)")


def report_ks(top_k: int) -> list[int]:
    """The Top-k reported: Top-1 and Top-K (``--top-k 5`` -> ``[1, 5]``, the paper's pair)."""
    return sorted({1, top_k})


def parse_tests(specs: list[str]) -> list[tuple[str, str]]:
    """``NAME=DATA`` strings -> (name, uri) pairs. Raises ConfigError for malformed or duplicate names."""
    if not specs:
        raise ConfigError("--test is required: give at least one NAME=DATA test set")
    return parse_named(specs, "--test")


def parse_named(specs: list[str], flag: str) -> list[tuple[str, str]]:
    """``NAME=DATA`` strings of ``flag`` -> (name, uri) pairs.

    Raises:
        ConfigError: a malformed spec or a name given twice.
    """
    pairs = []
    for spec in specs:
        name, sep, uri = spec.partition("=")
        name, uri = name.strip(), uri.strip()
        if not sep or not name or not uri or not re.fullmatch(r"[\w.\-]+", name):
            raise ConfigError(f"{flag} {spec!r} is not NAME=DATA; e.g. {flag} flora=s3://bucket/flora.parquet "
                              "(NAME: letters, digits, '_', '-', '.')")
        pairs.append((name, uri))
    names = [n for n, _ in pairs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{flag} names must be unique; {dupes} given twice: rename one (NAME=DATA)")
    return pairs


def validate_ood(cfg: EvaluateConfig) -> list[tuple[str, str]]:
    """The ``--ood`` sets as (name, uri), each input checked; their names may not repeat a ``--test`` name.

    Raises:
        ConfigError: a malformed or clashing spec, or an input that cannot be read.
    """
    from plantray.sources import open_source

    pairs = parse_named(cfg.ood or [], "--ood")
    clash = sorted({n for n, _ in pairs} & {n for n, _ in parse_named(cfg.test, "--test")})
    if clash:
        raise ConfigError(f"--ood names {clash} are also --test names: rename one (the report tells sets by name)")
    for name, uri in pairs:
        open_source(uri, flag=f"--ood {name}=").check()
    return pairs


def _model_labels(uris: list[str], artifacts: list) -> list[str]:
    """Report names: card names, else directory names, else numbered, whichever is unique."""
    for labels in ([a.card["name"] for a in artifacts], [u.rstrip("/").rsplit("/", 1)[-1] for u in uris]):
        if len(set(labels)) == len(labels):
            return labels
    return [f"{a.card['name']}#{i + 1}" for i, a in enumerate(artifacts)]


def validate(cfg: EvaluateConfig) -> tuple[list, list, list[int]]:
    """Checks everything checkable before work: flags, models, test sets and their label filters.

    Returns:
        (one :class:`~plantray.evaluation.score.ModelRun` per model, the test sets, the Top-k reported).
    Raises:
        ConfigError: naming the bad value and the fix.
    """
    from plantray import storage
    from plantray.evaluation.labelfilter import UNKNOWN, label_filter
    from plantray.evaluation.score import ModelRun, TestSet
    from plantray.model.artifact import load_artifact
    from plantray.sources import open_source

    check_model_options(cfg)
    pairs = parse_tests(cfg.test)
    check([(cfg.min_train_images >= 0, f"--min-train-images {cfg.min_train_images} must be >= 0"),
           (cfg.bootstrap >= 0, f"--bootstrap {cfg.bootstrap} must be >= 0")])
    storage.check_writable(cfg.output, "--output")
    if storage.holds_data(cfg.output) and not cfg.overwrite:
        raise ConfigError(f"--output {cfg.output!r} already holds data; choose a new directory or pass --overwrite")
    if cfg.overwrite:
        check_replaceable(cfg.output, "--output")
    uris = [cfg.model, *(cfg.compare or [])]
    artifacts = [load_artifact(u) for u in uris]
    for uri, art in zip(uris, artifacts):
        if cfg.min_train_images > 0 and not art.labels.has_counts:
            raise ConfigError(f"model {uri!r} has no per-class training counts (train_images in labels.csv), so "
                              f"--min-train-images {cfg.min_train_images} cannot be applied; add the counts or "
                              "pass --min-train-images 0")
    tests = [TestSet(name, uri, open_source(uri, flag=f"--test {name}=").label_counts()) for name, uri in pairs]
    runs = []
    for uri, art, label in zip(uris, artifacts, _model_labels(uris, artifacts)):
        filters = {t.name: label_filter(t.counts, art.labels, cfg.min_train_images) for t in tests}
        for t in tests:
            if filters[t.name][1]["labels"][UNKNOWN] == len([k for k in t.counts if k is not None]):
                raise ConfigError(f"--test {t.name}={t.uri}: none of its {len(t.counts)} labels is known to model "
                                  f"{uri!r}; check that scientificName spellings match the model's labels.csv")
        runs.append(ModelRun(label, uri, art, filters))
    return runs, tests, report_ks(cfg.top_k)


def priors(cfg: EvaluateConfig, runs: list, tests: list) -> dict:
    """Each model's location prior (label -> Prior), or {} without ``--prior``; checked before any work.

    Raises:
        ConfigError: see :func:`plantray.commands.options.location_prior`; a test set without the region column.
    """
    from plantray.sources import open_source

    if cfg.prior == "none":
        location_prior(cfg, [])  # refuses --checklist without --prior
        return {}
    for t in tests:
        columns = open_source(t.uri, flag=f"--test {t.name}=").columns(labels_from_dirs=True)
        if cfg.region_column not in columns:
            raise ConfigError(f"--test {t.name}={t.uri} has no {cfg.region_column!r} column for --prior; add "
                              "countryCode to the test manifest (plantray synth --countries N writes it) or "
                              "pass --region-column")
    return {r.label: location_prior(cfg, r.artifact.labels.names) for r in runs}


def predictions(cfg: EvaluateConfig, run, tests: list, plan, prior=None, ood_sets: list | None = None,
                progress=None):
    """The lazy dataset of one model's per-image results over every test set and ``--ood`` set (crop predictor).

    ``progress``: the :class:`plantray.cluster.ProgressCounter` of the console's progress line, or None.
    """
    from plantray.columns import STATE_PROVINCE
    from plantray.evaluation.labelfilter import kept_rows
    from plantray.evaluation.ood import ood_rows
    from plantray.images.crops import CropView
    from plantray.images.presets import EvalPreset
    from plantray.inference.pipeline import predict
    from plantray.inference.predictor import CropPredictor

    view = CropView(EvalPreset.from_dict(run.artifact.card["input"]), cfg.tta, cfg.seed)
    extra = (cfg.region_column, STATE_PROVINCE) if prior is not None else ()
    rows = kept_rows(tests, run.filters, extra)
    if ood_sets:  # one pipeline: the OOD rows share the actors, a test_set column tells them apart
        rows = rows.union(ood_rows(ood_sets, extra))
    return predict(rows, view, load_options(cfg), plan, cfg.decode_batch_size,
                   predictor=CropPredictor, model_uri=run.uri, model_label=run.label, ks=tuple(report_ks(cfg.top_k)),
                   prior=prior, progress=progress)


def score_calibration(uri: str, run, entries: list[dict]) -> None:
    """Adds to each (model, test set) entry its calibration with and without the card's temperature.

    Reads only the per-image scalar columns of the classified rows (:func:`plantray.evaluation.calibration
    .score_rows`), so this too can be recomputed from the predictions alone.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from plantray import columns as col
    from plantray import storage
    from plantray.evaluation.calibration import score_rows

    names = ["test_set", col.TOPK_CONFIDENCE, "correct@1", col.TRUE_PROBABILITY, col.BRIER,
             col.UNCALIBRATED_CONFIDENCE, col.UNCALIBRATED_TRUE_PROBABILITY, col.UNCALIBRATED_BRIER]
    table = None
    if storage.exists(uri):
        fs, path = storage.arrow_fs(uri)
        table = pads.dataset(path, filesystem=fs, format="parquet").to_table(
            columns=names, filter=pc.field(col.ERROR).is_null())
    for e in entries:
        rows = table.filter(pc.equal(table.column("test_set"), e["test_set"])) if table is not None else None
        scores = score_rows(rows) if rows is not None and rows.num_rows else None
        e["calibration"] = {"temperature": run.artifact.temperature, "fitted": bool(run.artifact.calibration),
                            **(scores or {"calibrated": None, "uncalibrated": None})}


def evaluate(cfg: EvaluateConfig) -> dict:
    """Runs ``plantray evaluate``; returns the summary (also REPORT_DIR/report.json).

    Args:
        cfg: the job's settings.
    Returns:
        ``{"output", "tta", "ks", "min_train_images", "models", "tests", "results", "seconds"}`` where
        ``results`` holds one entry per (model, test set); with ``--ood`` also ``ood_sets`` and ``ood``, one
        entry per (model, OOD set) (:func:`plantray.evaluation.ood.score_ood`).
    Raises:
        ConfigError: bad flags, models or test sets, before any work starts.
    """
    from plantray import storage

    runs, tests, ks = validate(cfg)
    run_priors = priors(cfg, runs, tests)
    ood_sets = validate_ood(cfg)
    # Ray (and with it torch) only once every check has passed: refusals stay quick and light.
    from plantray.cluster import counting, ensure_ray
    from plantray.evaluation.ood import score_ood
    from plantray.evaluation.prior import score_prior
    from plantray.evaluation.report import write_report
    from plantray.evaluation.score import score_run
    from plantray.images.crops import n_crops
    from plantray.inference.pipeline import plan_for_cluster

    console.headline(f"evaluating {len(runs)} model(s) on {len(tests)} test set(s) with {cfg.tta} into {cfg.output}")
    ensure_ray(cfg.dashboard)
    plan = plan_for_cluster(cfg, crops=n_crops(cfg.tta))
    log.info("evaluate plan: %s", plan)
    console.say(f"  {plan.describe()}")
    started = utc_now()
    if cfg.overwrite:  # plantray's own output only (checked by validate)
        storage.remove(cfg.output)
    mark_output(cfg.output, "evaluate")
    start = time.perf_counter()
    results, prior_results, ood = [], [], []
    for i, run in enumerate(runs):
        out = storage.join(cfg.output, PREDICTIONS, f"model_{i}")
        fs, path = storage.arrow_fs(out)
        kept = None if ood_sets else sum(run.filters[t.name][1]["images"]["kept"] for t in tests)
        with console.Progress(f"evaluating {run.label}", total=kept) as line, counting(line) as counter:
            predictions(cfg, run, tests, plan, run_priors.get(run.label), ood_sets, counter).write_parquet(
                path, filesystem=fs)
        entries = score_run(out, run, tests, ks, cfg.bootstrap, cfg.seed)
        score_calibration(out, run, entries)
        results += entries
        if run_priors:
            prior_results += score_prior(out, run.label, tests, ks)
        ood += score_ood(out, run.label, [t.name for t in tests], ood_sets)
    summary = {"output": cfg.output, "tta": cfg.tta, "crops": n_crops(cfg.tta), "ks": ks,
               "min_train_images": cfg.min_train_images, "seed": cfg.seed, "bootstrap": cfg.bootstrap,
               "models": [{"label": r.label, "uri": r.uri, "name": r.artifact.card["name"],
                           "version": r.artifact.card["version"], "sha256": r.artifact.sha256,
                           "predictions": f"{PREDICTIONS}/model_{i}"} for i, r in enumerate(runs)],
               "tests": [{"name": t.name, "uri": t.uri} for t in tests], "results": results,
               "seconds": round(time.perf_counter() - start, 2), "plan": plan.__dict__}
    if run_priors:
        summary["prior"] = {**next(iter(run_priors.values())).describe(), "results": prior_results}
    if ood_sets:
        summary.update(ood_sets=[{"name": n, "uri": u} for n, u in ood_sets], ood=ood)
    write_report(summary)
    write_run_record(cfg.output, "evaluate", cfg, summary, started)
    return summary


def format_summary(summary: dict) -> str:
    """The Table 1 printed by the CLI, with where the full report is."""
    from plantray import storage
    from plantray.evaluation.report import markdown_table, ood_table, prior_table

    report = storage.join(summary["output"], "report.md")
    prior = f"\n\nWith and without the location prior (%):\n{prior_table(summary)}" if summary.get("prior") else ""
    ood = ""
    if summary.get("ood"):
        ood = f"\n\nKnown (test sets) vs unknown (--ood), score: {OOD_SCORE}\n{ood_table(summary)}"
    return f"{markdown_table(summary)}{prior}{ood}\n\nreport: {report} ({summary['seconds']} s)"


CONFIG = EvaluateConfig
run = evaluate
