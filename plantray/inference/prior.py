"""Location priors: a checklist of species per region, applied to the averaged probabilities before ranking.

Like SpeciesNet's geofencing (by country) and Pl@ntNet's regional floras, the model's probabilities are
combined with where each species is known to occur:

- ``restrict``: species absent from the row's region get probability 0, the rest are renormalised;
- ``reweight``: absent species are multiplied by ``floor`` (present ones by 1), then renormalised, so a
  very confident prediction of an absent species can still win.

A row's region is its ``countryCode`` (upper-cased), refined by ``stateProvince`` when the checklist lists
species for that state. A row without a country (``no location``), or whose country the checklist does not
cover or where it lists none of the model's species (``region not covered``), is predicted without the
prior. The region x species mask is built once, on the driver, and shipped to each model actor.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from plantray import columns as col
from plantray import storage
from plantray.config import ConfigError
from plantray.sources.checklist import Checklist, match_names

MODES = ("restrict", "reweight")
NO_LOCATION, NOT_COVERED = "no location", "region not covered"
STATE_COLUMN = col.STATE_PROVINCE


@dataclass
class Prior:
    """A checklist turned into a mask over one model's labels.

    Attributes:
        mode: ``restrict`` or ``reweight``.
        floor: reweight's relative weight of absent species.
        checklist: the checklist's URI.
        region_column: the input column holding the ISO 3166-1 country code.
        regions: (country, state or None) -> row of ``mask``.
        mask: bool ``[regions, labels]``: the species present in each region.
        unmatched: checklist names matching no label.
        matched: checklist names matching a label.
    """

    mode: str
    floor: float
    checklist: str
    region_column: str
    regions: dict
    mask: np.ndarray
    unmatched: list = field(default_factory=list)
    matched: int = 0

    def describe(self) -> dict:
        """What the Parquet metadata and the run summary record about this prior."""
        return {"mode": self.mode, "floor": self.floor if self.mode == "reweight" else None,
                "checklist": self.checklist, "region_column": self.region_column,
                "countries": sorted({c for c, _ in self.regions}), "regions": len(self.regions),
                "species_matched": self.matched, "species_unmatched": len(self.unmatched)}

    def metadata(self) -> dict[bytes, bytes]:
        """The Parquet file metadata entry (:data:`plantray.columns.PRIOR_METADATA_KEY`)."""
        return {col.PRIOR_METADATA_KEY: json.dumps(self.describe()).encode()}

    def apply(self, table: pa.Table, probs: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, pa.Array]:
        """The prior applied to the valid rows of a batch.

        Args:
            table: the batch (its region columns are read).
            probs: float ``[V, C]`` probabilities of the valid rows.
            rows: the batch row of each valid row.
        Returns:
            (adjusted probabilities, the ``prior`` column over every batch row: the mode, ``no location``,
            ``region not covered``, or null for a row that failed upstream).
        """
        countries = _values(table, self.region_column, rows)
        states = _values(table, STATE_COLUMN, rows)
        index = region_index(self.regions, countries, states)
        adjusted = apply_prior(probs, self.mask, index, self.mode, self.floor)
        status = np.where(index >= 0, self.mode, np.where(index == -1, NO_LOCATION, NOT_COVERED))
        out = [None] * table.num_rows
        for i, s in zip(rows, status.tolist()):
            out[i] = s
        return adjusted, pa.array(out, pa.string())


def _values(table: pa.Table, name: str, rows: np.ndarray) -> list:
    if name not in table.column_names:
        return [None] * len(rows)
    values = table.column(name).to_pylist()
    return [values[i] for i in rows]


def build_prior(checklist: Checklist, labels: list[str], mode: str, floor: float = 0.01,
                region_column: str = col.COUNTRY_CODE) -> Prior:
    """Matches a checklist to a model's labels and builds the region x species mask.

    A country's row holds every species listed anywhere in it; a (country, state) row holds the species
    listed for that state plus those listed for the whole country. Regions listing none of the model's
    species are left out (rows there count as ``region not covered``).

    Args:
        checklist: from :func:`plantray.sources.checklist.read_checklist`.
        labels: the model's label names, in logit order.
        mode: ``restrict`` or ``reweight``.
        floor: reweight's weight of absent species, in (0, 1).
        region_column: the input column with the country code.
    Returns:
        The prior.
    Raises:
        ConfigError: a bad mode or floor, or no checklist species among the labels.
    """
    if mode not in MODES:
        raise ConfigError(f"--prior {mode!r}: use one of {list(MODES)}")
    if mode == "reweight" and not 0 < floor < 1:
        raise ConfigError(f"--prior-floor {floor} must be in (0, 1): the weight of species absent from a region")
    matched, unmatched = match_names(checklist.names, labels)
    if not matched:
        raise ConfigError(f"--checklist {checklist.uri!r}: none of its {len(checklist.names)} species (e.g. "
                          f"{checklist.names[:3]}) is a label of the model (e.g. {labels[:3]}); use a checklist "
                          "of the model's species, spelled as in its labels.csv")
    position = {name: i for i, name in enumerate(labels)}
    present = collections.defaultdict(set)
    for name, country, state in checklist.entries:
        if name in matched:
            k = position[matched[name]]
            present[(country, None)].add(k)
            present[(country, _fold(state))].add(k)
    for (country, state), species in list(present.items()):
        if state is not None:
            species |= _country_wide(checklist, matched, position, country)
    keys = sorted((k for k, v in present.items() if v), key=lambda k: (k[0], k[1] or ""))
    mask = np.zeros((len(keys), len(labels)), bool)
    for r, key in enumerate(keys):
        mask[r, sorted(present[key])] = True
    return Prior(mode, floor, checklist.uri, region_column, {k: r for r, k in enumerate(keys)}, mask,
                 unmatched, len(matched))


def _fold(state: str | None) -> str | None:
    return state.strip().casefold() if state and state.strip() else None


def _country_wide(checklist: Checklist, matched: dict, position: dict, country: str) -> set:
    return {position[matched[n]] for n, c, s in checklist.entries if c == country and s is None and n in matched}


def region_index(regions: dict, countries: list, states: list) -> np.ndarray:
    """Each row's row of the mask: its (country, state) when listed, else its country; -1 without a country,
    -2 for a country the prior does not cover.

    Args:
        regions: (country, folded state or None) -> mask row.
        countries: each row's country code (None/blank = no location).
        states: each row's stateProvince (None/blank = none).
    """
    out = np.empty(len(countries), np.int64)
    for i, (country, state) in enumerate(zip(countries, states)):
        country = str(country).strip().upper() if country is not None else ""
        if not country:
            out[i] = -1
            continue
        out[i] = regions.get((country, _fold(str(state)) if state is not None else None),
                             regions.get((country, None), -2))
    return out


def apply_prior(probs: np.ndarray, mask: np.ndarray, index: np.ndarray, mode: str, floor: float) -> np.ndarray:
    """The prior applied to rows with a mask row (``index >= 0``); other rows are returned unchanged.

    Args:
        probs: float ``[V, C]`` probabilities (rows sum to 1).
        mask: bool ``[R, C]`` species present per region.
        index: int ``[V]`` mask row per probability row, negative for none.
        mode: ``restrict`` (absent species -> 0) or ``reweight`` (absent species x ``floor``).
        floor: reweight's weight of absent species.
    Returns:
        float32 ``[V, C]``, each row renormalised to sum to 1.
    """
    out = np.array(probs, dtype=np.float32, copy=True)
    hit = index >= 0
    if not hit.any():
        return out
    present = mask[index[hit]]
    weights = present.astype(np.float32) if mode == "restrict" else np.where(present, 1.0, floor).astype(np.float32)
    scaled = out[hit] * weights
    total = scaled.sum(axis=1, keepdims=True)
    # All present species at probability 0 (underflow): spread evenly over them rather than divide by 0.
    empty = total[:, 0] <= 0
    scaled[empty] = weights[empty]
    total[empty] = weights[empty].sum(axis=1, keepdims=True)
    out[hit] = scaled / total
    return out


def drop_zero_ranks(names: list, confidences: list, status: list) -> tuple[list, list]:
    """Restrict's ranked lists without the absent species (probability 0) of rows the prior applied to.

    Args:
        names: per row, the ranked names (None for failed rows).
        confidences: per row, their probabilities.
        status: per row, the ``prior`` outcome; only rows with ``restrict`` are trimmed.
    Returns:
        (names, confidences), trimmed.
    """
    out_names, out_conf = [], []
    for ns, cs, s in zip(names, confidences, status):
        if s == "restrict" and ns is not None:
            keep = [i for i, c in enumerate(cs) if c > 0]
            ns, cs = [ns[i] for i in keep], [cs[i] for i in keep]
        out_names.append(ns)
        out_conf.append(cs)
    return out_names, out_conf


def count_prior(uri: str) -> dict:
    """Rows of a written prediction dataset by prior outcome, scanning only the ``prior`` column.

    Returns:
        ``{"applied": n, "no location": n, "region not covered": n}`` (failed rows are not counted).
    """
    import pyarrow.dataset as pads

    fs, path = storage.arrow_fs(uri)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    counts: collections.Counter = collections.Counter()
    if col.PRIOR in dataset.schema.names:
        for batch in dataset.to_batches(columns=[col.PRIOR]):
            counts.update(v for v in batch.column(0).to_pylist() if v is not None)
    return {"applied": sum(counts[m] for m in MODES), NO_LOCATION: counts[NO_LOCATION],
            NOT_COVERED: counts[NOT_COVERED]}
