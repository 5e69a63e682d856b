"""Options every inference command shares (classify, nightly, evaluate)."""

from __future__ import annotations

from dataclasses import dataclass

from plantray.config import field
from plantray.images.presets import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

PRECISION_HELP = ("auto = bf16 where the device computes it natively (GPUs; CPUs with AVX512-BF16 or AMX), "
                  "else fp32; bench/precision.py measures speed and Top-1 agreement")


@dataclass
class InferenceOptions:
    """What every inference job (classify, nightly) shares: model, input, and how to run the model."""

    model: str = field("", required=True, help="plantray model directory (local or s3://...)")
    input: str = field("", required=True, help="manifest (.parquet/.csv with image_uri), Darwin Core "
                       "Archive (.zip or dir with meta.xml), or a directory/prefix of images")
    top_k: int = field(5, help="ranked names and probabilities kept per image")
    batch_size: int | None = field(None, help="images per model forward (default: 256 on GPU, 16 on CPU)")
    num_actors: int | None = field(None, help="model actors (default: one per GPU, else CPUs/threads)")
    threads_per_actor: int | None = field(None, help="torch threads per CPU actor (default: a node's CPUs, <= 8)")
    decode_batch_size: int = field(16, help="images per decode task batch")
    device: str = field("auto", choices=["auto", "cpu", "gpu"], help="where the model runs")
    precision: str = field("auto", choices=["auto", "fp32", "bf16"],
                           help=PRECISION_HELP)
    rows_per_file: int = field(200_000, help="minimum rows per output Parquet file")
    max_pixels: int = field(DEFAULT_MAX_PIXELS, help="larger images become 'image too large' rows")
    max_bytes: int = field(DEFAULT_MAX_BYTES, help="larger files become 'file too large' rows")
    rollup_threshold: float = field(0.0, help="below this top-1 confidence, report the genus/family whose "
                                    "summed probability clears it (0 = off)")
    image_cache: str | None = field(None, help="URI prefix caching HTTP-fetched image bytes for re-runs")
    http_timeout: float = field(20.0, help="seconds before an HTTP fetch times out")
    http_per_host: int = field(4, help="concurrent fetches per host and process")
