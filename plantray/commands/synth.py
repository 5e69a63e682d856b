"""``plantray synth``: write a PlantNet-like synthetic dataset (the generator is :mod:`plantray.synth`)."""

from __future__ import annotations

from dataclasses import dataclass

from plantray.commands.record import utc_now, write_run_record
from plantray.config import JobConfig, check, field

MAX_SPECIES = 500
MAX_COUNTRIES = 20  # len(plantray.synth.ranges.COUNTRIES), not imported: numpy would slow `plantray --help`


@dataclass
class SynthConfig(JobConfig):
    """Options of the synthetic dataset generator (CLI flags are generated from these fields)."""

    out: str = field(help="output directory or fsspec URI (s3://bucket/prefix); must be empty",
                     positional=True)
    species: int = field(8, help=f"number of species (2..{MAX_SPECIES})")
    images_per_species: int = field(30, help="training images per species, before imbalance")
    test_per_species: int = field(8, help="held-out test images per species")
    unseen_per_species: int = field(4, help="images per species in the 'unseen' split (classification demo)")
    seed: int = field(0, help="random seed; the same seed gives byte-identical output")
    min_pixels: int = field(200_000, help="smallest image pixel count (the paper: 200K-600K)")
    max_pixels: int = field(600_000, help="largest image pixel count")
    min_aspect: float = field(0.5, help="smallest width/height ratio")
    max_aspect: float = field(2.0, help="largest width/height ratio")
    imbalance: float = field(0.0, help="long-tail exponent: species k gets ~n*(k+1)^-imbalance train images")
    quality: int = field(90, help="JPEG quality (1..95)")
    countries: int = field(0, help=f"give each species a range among this many countries (0..{MAX_COUNTRIES}; "
                           "0 = off): countryCode on every image, checklist.csv and checklist-dwca.zip")
    ood_noplant: int = field(12, help="images of no plant (noise, textures, geometric scenes) in the "
                             "out-of-distribution set ood_noplant.parquet")
    ood_species: int = field(2, help="species absent from the labels and every split, in the "
                             "out-of-distribution set ood_species.parquet")
    ood_per_species: int = field(4, help="images per species in ood_species.parquet")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Raises ConfigError naming the first bad value and what is allowed."""
        check([
            (bool(self.out), "out must be a directory or URI, got an empty string"),
            (2 <= self.species <= MAX_SPECIES, f"species={self.species}: use 2..{MAX_SPECIES}"),
            (self.images_per_species >= 1, f"images_per_species={self.images_per_species}: use >= 1"),
            (self.test_per_species >= 0, f"test_per_species={self.test_per_species}: use >= 0"),
            (self.unseen_per_species >= 0, f"unseen_per_species={self.unseen_per_species}: use >= 0"),
            (self.min_pixels >= 1024, f"min_pixels={self.min_pixels}: use >= 1024 so plants stay drawable"),
            (self.min_pixels <= self.max_pixels,
             f"min_pixels={self.min_pixels} > max_pixels={self.max_pixels}: swap or widen them"),
            (self.min_aspect > 0, f"min_aspect={self.min_aspect}: use a ratio > 0"),
            (self.min_aspect <= self.max_aspect,
             f"min_aspect={self.min_aspect} > max_aspect={self.max_aspect}: swap them"),
            (self.imbalance >= 0, f"imbalance={self.imbalance}: use 0 (balanced) or a positive exponent"),
            (1 <= self.quality <= 95, f"quality={self.quality}: use a JPEG quality in 1..95"),
            (0 <= self.countries <= MAX_COUNTRIES, f"countries={self.countries}: use 0..{MAX_COUNTRIES}"),
            *self._ood_checks(),
        ])

    def _ood_checks(self) -> list[tuple[bool, str]]:
        return [(self.ood_noplant >= 0, f"ood_noplant={self.ood_noplant}: use >= 0 (0 = no such set)"),
                (0 <= self.ood_species <= MAX_SPECIES,
                 f"ood_species={self.ood_species}: use 0..{MAX_SPECIES} (0 = no such set)"),
                (self.ood_per_species >= 0, f"ood_per_species={self.ood_per_species}: use >= 0")]


def synthesize(cfg: SynthConfig) -> dict:
    """Writes the dataset to ``cfg.out`` and its run record; returns the generator's summary.

    The summary's ``ood`` entry lists the out-of-distribution sets (:mod:`plantray.synth.ood`).
    """
    from plantray import console
    from plantray.synth.dataset import check_out, make_species, split_counts
    from plantray.synth.dataset import synthesize as generate
    from plantray.synth.ood import write_ood_sets

    started = utc_now()
    check_out(cfg.out)  # refuses a non-empty OUT before a line is printed
    total = sum(sum(counts) for counts in split_counts(cfg).values())
    console.headline(f"drawing {cfg.species} synthetic species into {cfg.out}")
    with console.Progress("drawing", total=total) as line:
        summary = generate(cfg, line)
    summary["ood"] = write_ood_sets(cfg, make_species(cfg.species, cfg.seed))
    write_run_record(cfg.out, "synth", cfg, summary, started)
    return summary


CONFIG = SynthConfig
run = synthesize
