"""Options several commands share: how the model runs (classify, nightly, evaluate) and the embedded Ray."""

from __future__ import annotations

from dataclasses import dataclass

from plantray.config import ConfigError, JobConfig, check, field
from plantray.images.presets import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

PRIOR_MODES = ("restrict", "reweight")  # plantray.inference.prior.MODES, without importing numpy at --help
PRECISION_HELP = ("auto = bf16 where the device computes it natively (GPUs; CPUs with AVX512-BF16 or AMX), "
                  "else fp32; bench/precision.py measures speed and Top-1 agreement")


@dataclass
class RayOptions(JobConfig):
    """How a command that runs on Ray starts its embedded local Ray (a cluster's own settings stand)."""

    dashboard: bool = field(False, help="start the embedded local Ray with its dashboard (off: it costs CPU)")


@dataclass
class ModelOptions(RayOptions):
    """How the model runs and what the loader accepts: shared by classify, nightly and evaluate."""

    model: str = field("", required=True, help="plantray model directory (local or s3://...)")
    top_k: int = field(5, help="ranked names and probabilities kept per image (evaluate: report Top-1 and Top-K)")
    batch_size: int | None = field(None, help="images per model forward, each with all its crops "
                                   "(default: 256 crops' worth on GPU, 16 on CPU)")
    num_actors: int | None = field(None, help="a fixed number of model actors (default: an autoscaling pool "
                                   "from --min-actors to --max-actors)")
    min_actors: int = field(1, help="model actors started at once; the autoscaler adds nodes for them")
    max_actors: int | None = field(None, help="most model actors (default: as many as the cluster can have "
                                   "GPUs, or CPUs per actor; no bound on a cluster that can grow without one)")
    resource_timeout: float = field(600.0, help="seconds to wait for the cluster to grant --min-actors "
                                    "actors (and a CPU for decoding) before failing with what was asked "
                                    "and what the cluster has (0 = wait forever)")
    threads_per_actor: int | None = field(None, help="torch threads per CPU actor (default: a node's CPUs, <= 8)")
    decode_batch_size: int = field(16, help="images per decode task batch")
    device: str = field("auto", choices=["auto", "cpu", "gpu"], help="where the model runs")
    precision: str = field("auto", choices=["auto", "fp32", "bf16"], help=PRECISION_HELP)
    max_pixels: int = field(DEFAULT_MAX_PIXELS, help="larger images become 'image too large' rows")
    max_bytes: int = field(DEFAULT_MAX_BYTES, help="larger files (local, object store or HTTP) become "
                           "'file too large' rows")
    image_cache: str | None = field(None, help="URI prefix caching HTTP-fetched image bytes for re-runs")
    http_timeout: float = field(20.0, help="seconds before an HTTP fetch times out")
    http_per_host: int = field(4, help="concurrent fetches per host and process")
    checklist: str | None = field(None, help="species per country: a CSV (scientificName, countryCode, optional "
                                  "stateProvince) or a checklist Darwin Core Archive (Taxon + Distribution)")
    prior: str = field("none", choices=["none", *PRIOR_MODES],
                       help="location prior from --checklist: restrict = drop species absent from the row's "
                       "country and renormalise; reweight = multiply them by --prior-floor and renormalise")
    prior_floor: float = field(0.01, help="--prior reweight: relative weight of species absent from the region")
    region_column: str = field("countryCode", help="input column with the ISO 3166-1 alpha-2 country code "
                               "(stateProvince refines it when the checklist lists states)")


@dataclass
class InferenceOptions(ModelOptions):
    """What classify and nightly share beyond the model: the input and the prediction rows."""

    input: str = field("", required=True, help="manifest (.parquet/.csv with image_uri), Darwin Core "
                       "Archive (.zip, .tgz or dir with meta.xml), or a directory/prefix of images")
    rows_per_file: int = field(200_000, help="minimum rows per output Parquet file")
    rollup_threshold: float = field(0.0, help="below this top-1 confidence, report the genus/family whose "
                                    "summed probability clears it (0 = off)")
    min_confidence: float = field(0.0, help="the probability a reported name must reach: roll up through genus "
                                  "and family at the larger of this and --rollup-threshold; when no rank reaches it "
                                  "the row keeps its top-k but scientificName/taxonRank are null (counted as "
                                  "unknown; 0 = off)")
    embeddings: str | None = field(None, help="also write each decoded image's penultimate-layer vector (float16) "
                                   "to this Parquet dataset, keyed like the predictions (near-duplicate search)")


def check_model_options(cfg: ModelOptions) -> None:
    """Refuses out-of-range model options before any work.

    Raises:
        ConfigError: naming the flag and what is allowed.
    """
    check([(cfg.top_k >= 1, f"--top-k {cfg.top_k} must be >= 1"),
           (cfg.decode_batch_size >= 1, f"--decode-batch-size {cfg.decode_batch_size} must be >= 1"),
           (cfg.batch_size is None or cfg.batch_size >= 1, f"--batch-size {cfg.batch_size} must be >= 1"),
           (cfg.num_actors is None or cfg.num_actors >= 1, f"--num-actors {cfg.num_actors} must be >= 1"),
           (cfg.min_actors >= 1, f"--min-actors {cfg.min_actors} must be >= 1"),
           (cfg.max_actors is None or cfg.max_actors >= cfg.min_actors,
            f"--max-actors {cfg.max_actors} must be >= --min-actors {cfg.min_actors}"),
           (cfg.resource_timeout >= 0, f"--resource-timeout {cfg.resource_timeout} must be >= 0 (0 = no limit)"),
           (cfg.max_bytes >= 1 and cfg.max_pixels >= 1, "--max-bytes and --max-pixels must be >= 1"),
           (cfg.http_timeout > 0 and cfg.http_per_host >= 1, "--http-timeout must be > 0, --http-per-host >= 1"),
           (0 < cfg.prior_floor < 1, f"--prior-floor {cfg.prior_floor} must be in (0, 1)"),
           (bool(cfg.region_column), "--region-column must name a column")])


def location_prior(cfg: ModelOptions, labels: list[str], columns: list[str] | None = None):
    """The location prior of ``--checklist``/``--prior`` for a model's labels, or None (checked before work).

    Args:
        cfg: the command's flags.
        labels: the model's label names (logit order).
        columns: the input's columns, when known: it must hold ``--region-column``.
    Returns:
        A :class:`plantray.inference.prior.Prior` or None when ``--prior none``.
    Raises:
        ConfigError: a prior without a checklist (or the reverse), a bad checklist, a missing region column,
            or a checklist naming none of the model's species.
    """
    from plantray.inference.prior import build_prior
    from plantray.sources.checklist import read_checklist

    if cfg.prior == "none":
        if cfg.checklist:
            raise ConfigError(f"--checklist {cfg.checklist!r} is given without --prior; pass --prior restrict or "
                              "--prior reweight (or drop --checklist)")
        return None
    if not cfg.checklist:
        raise ConfigError(f"--prior {cfg.prior} needs --checklist: a CSV (scientificName,countryCode) or a "
                          "checklist Darwin Core Archive")
    if columns is not None and cfg.region_column not in columns:
        raise ConfigError(f"--region-column {cfg.region_column!r} is not a column of the input (columns: "
                          f"{columns[:12]}); add a countryCode column or name the column holding it")
    return build_prior(read_checklist(cfg.checklist), labels, cfg.prior, cfg.prior_floor, cfg.region_column)


def prior_summary(prior, uri: str) -> dict | None:
    """The run summary's ``prior`` entry: the prior and its counts in the written output at ``uri``."""
    from plantray.inference.prior import count_prior

    if prior is None:
        return None
    return {**prior.describe(), "unmatched_names": prior.unmatched[:20], "counts": count_prior(uri)}


def prior_lines(summary: dict | None) -> list[str]:
    """The closing lines about the prior (none without one)."""
    if not summary:
        return []
    c = summary["counts"]
    return [f"  prior {summary['mode']} ({summary['checklist']}): applied {c['applied']}, no location "
            f"{c['no location']}, region not covered {c['region not covered']}; checklist species matched "
            f"{summary['species_matched']}, unmatched {summary['species_unmatched']}"]


def check_identification_options(cfg: InferenceOptions) -> None:
    """Refuses out-of-range roll-up and minimum-confidence thresholds (classify, nightly) before any work.

    Raises:
        ConfigError: naming the flag and what is allowed.
    """
    check([(0.0 <= cfg.rollup_threshold < 1.0, f"--rollup-threshold {cfg.rollup_threshold} must be in [0, 1)"),
           (0.0 <= cfg.min_confidence < 1.0, f"--min-confidence {cfg.min_confidence} must be in [0, 1): a "
            "probability a name must reach (0 = off)")])


def load_options(cfg: ModelOptions):
    """The loader's settings (:class:`plantray.images.loader.LoadOptions`) from the command's flags."""
    from plantray import storage
    from plantray.images.loader import LoadOptions

    return LoadOptions(max_bytes=cfg.max_bytes, max_pixels=cfg.max_pixels, http_timeout=cfg.http_timeout,
                       http_per_host=cfg.http_per_host, image_cache=storage.absolute(cfg.image_cache))


def identifications(ds, cfg: InferenceOptions, artifact, plan, now_iso: str, prior=None, embeddings=None,
                    progress=None):
    """The model stage of classify and nightly (:func:`plantray.darwincore.identify.identify`).

    ``embeddings``: where this chunk's vectors go (:func:`chunk_embeddings`); None: none are written.
    ``progress``: the :class:`plantray.cluster.ProgressCounter` of the console's progress line, or None.
    """
    from plantray.darwincore.identify import identify

    return identify(ds, artifact, plan, load_options(cfg), cfg.decode_batch_size, top_k=cfg.top_k,
                    rollup_threshold=cfg.rollup_threshold, now_iso=now_iso, prior=prior,
                    min_confidence=cfg.min_confidence, embeddings=embeddings, progress=progress)


def chunk_embeddings(cfg: InferenceOptions, *parts: str) -> str | None:
    """One chunk's own directory under ``--embeddings`` (``parts``, e.g. ``chunk-000003``), emptied first.

    Run only for a chunk not yet committed, so whatever is there came from an attempt killed before its
    commit. The actors name each file after its batch's images, and a recomputed chunk need not batch its
    rows the same way, so without this a crash and resume could leave two vectors for one image.
    """
    if not cfg.embeddings:
        return None
    from plantray import storage

    where = storage.join(cfg.embeddings, *parts)
    storage.remove(where)
    return where


def check_embeddings(cfg: InferenceOptions, output: str, overwrite: bool) -> None:
    """Refuses an ``--embeddings`` location that is the predictions' own or (without ``overwrite``) holds data.

    Raises:
        ConfigError: naming the flag and the fix.
    """
    from plantray import storage

    if not cfg.embeddings:
        return
    check([(cfg.embeddings.rstrip("/") != output.rstrip("/"),
            f"--embeddings {cfg.embeddings!r} is the predictions' location; give a directory of its own")])
    storage.check_writable(cfg.embeddings, "--embeddings")
    if storage.holds_data(cfg.embeddings) and not overwrite:
        raise ConfigError(f"--embeddings {cfg.embeddings!r} already holds data; choose a new location or pass "
                          "--overwrite to replace it")


def embeddings_summary(uri: str | None) -> dict | None:
    """Files and rows of the embeddings dataset (footers only), or None when none was asked for."""
    if not uri:
        return None
    import pyarrow.dataset as pads

    from plantray import storage

    if not storage.holds_data(uri):
        return {"uri": uri, "files": 0, "rows": 0}
    fs, path = storage.arrow_fs(uri)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    return {"uri": uri, "files": len(dataset.files), "rows": dataset.count_rows()}
