"""``plantray review serve DIR``: serve a review site on this machine and write the decisions file as the
reviewer works (the site itself still works without it, from disk or any static host)."""

from __future__ import annotations

from dataclasses import dataclass

from plantray.config import ConfigError, JobConfig, check, field


@dataclass
class ReviewServeConfig(JobConfig):
    """Settings of ``plantray review serve``."""

    dir: str = field("", positional=True, required=True, help="a review site made by plantray review build (local)")
    decisions: str | None = field(None, help="the decisions file to write (default: DIR/decisions.csv)")
    host: str = field("127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    port: int = field(8765, help="port to listen on")


def review_serve(cfg: ReviewServeConfig) -> None:
    """Serves DIR until interrupted.

    Raises:
        ConfigError: DIR is not a local review site, or the port is out of range.
    """
    import os

    from plantray import storage
    from plantray.review.serve import serve
    from plantray.review.site import DATA

    check([(1 <= cfg.port <= 65535, f"--port {cfg.port} must be between 1 and 65535")])
    if storage.scheme(cfg.dir) != "file" or not os.path.exists(os.path.join(cfg.dir, DATA, "site.js")):
        raise ConfigError(f"DIR {cfg.dir!r} is not a local review site (no data/site.js); build one with "
                          "plantray review build PREDICTIONS --out DIR")
    site = os.path.abspath(cfg.dir)
    try:
        serve(site, cfg.decisions or os.path.join(site, "decisions.csv"), cfg.host, cfg.port)
    except OSError as e:  # the address is taken or not this machine's
        raise ConfigError(f"cannot listen on {cfg.host}:{cfg.port} ({e.strerror or e}); choose another --port "
                          "or --host") from None


CONFIG = ReviewServeConfig
run = review_serve
