"""Options several commands share: how the model runs (classify, nightly, evaluate) and the embedded Ray."""

from __future__ import annotations

from dataclasses import dataclass

from plantray.config import ConfigError, JobConfig, check, field
from plantray.images.presets import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

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
    num_actors: int | None = field(None, help="model actors (default: one per GPU, else CPUs/threads)")
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


@dataclass
class InferenceOptions(ModelOptions):
    """What classify and nightly share beyond the model: the input and the prediction rows."""

    input: str = field("", required=True, help="manifest (.parquet/.csv with image_uri), Darwin Core "
                       "Archive (.zip, .tgz or dir with meta.xml), or a directory/prefix of images")
    rows_per_file: int = field(200_000, help="minimum rows per output Parquet file")
    rollup_threshold: float = field(0.0, help="below this top-1 confidence, report the genus/family whose "
                                    "summed probability clears it (0 = off)")
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
           (cfg.max_bytes >= 1 and cfg.max_pixels >= 1, "--max-bytes and --max-pixels must be >= 1"),
           (cfg.http_timeout > 0 and cfg.http_per_host >= 1, "--http-timeout must be > 0, --http-per-host >= 1")])


def load_options(cfg: ModelOptions):
    """The loader's settings (:class:`plantray.images.loader.LoadOptions`) from the command's flags."""
    from plantray.images.loader import LoadOptions

    return LoadOptions(max_bytes=cfg.max_bytes, max_pixels=cfg.max_pixels, http_timeout=cfg.http_timeout,
                       http_per_host=cfg.http_per_host, image_cache=cfg.image_cache)


def identifications(ds, cfg: InferenceOptions, artifact, plan, now_iso: str):
    """The model stage of classify and nightly (:func:`plantray.darwincore.identify.identify`)."""
    from plantray.darwincore.identify import identify

    return identify(ds, artifact, plan, load_options(cfg), cfg.decode_batch_size, top_k=cfg.top_k,
                    rollup_threshold=cfg.rollup_threshold, now_iso=now_iso, embeddings=cfg.embeddings)


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
