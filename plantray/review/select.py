"""Which predictions a review site shows, and in what order: ``--select``, ``--sample-per-species``, ``--order``.

Everything here works on *card rows* (:mod:`plantray.review.cards`): one row per card with the columns
``kind``, ``scientificName``, ``confidence``, ``agreement``, ``prior``, ``_species``, ``_sample``. The
functions are pure (pyarrow in, pyarrow out), so the Ray job (:mod:`plantray.review.build`) applies them
per block and the unit tests call them directly.

``--select`` terms (each flag one term; terms of different kinds must all hold, values of one kind are
alternatives)::

    species | rolled-up | unknown | errors      the row's kind (comma-separate several: unknown,rolled-up)
    confidence=LO:HI                             LO <= confidence <= HI (either side may be empty)
    agreement=different[,same genus,...]         publisher_agreement values (publisher_agreement= too)
    prior=applied | prior=not-applied | prior=restrict,...
    species=NAME                                 the predicted scientificName (repeat for several)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from plantray.columns import DIFFERENT, NO_PUBLISHER_NAME, SAME_GENUS, SAME_SPECIES
from plantray.config import ConfigError
from plantray.review import ORDERS  # noqa: F401 (select.ORDERS: the orders order_keys knows)

# A card's kind: what the machine said about the image
SPECIES, ROLLED_UP, UNKNOWN, ERRORS = "species", "rolled-up", "unknown", "errors"
KINDS = (SPECIES, ROLLED_UP, UNKNOWN, ERRORS)
AGREEMENTS = (DIFFERENT, SAME_GENUS, NO_PUBLISHER_NAME, SAME_SPECIES)  # review order: disagreements first
PRIORS_APPLIED = ("restrict", "reweight")
PRIORS_NOT_APPLIED = ("no location", "region not covered")
# --order agreement: disagreements first; rows without an agreement value (no publisher column) before the
# ones the publisher already confirms
_AGREEMENT_RANK = {DIFFERENT: 0, SAME_GENUS: 1, NO_PUBLISHER_NAME: 2, SAME_SPECIES: 4}


@dataclass(frozen=True)
class Selection:
    """A parsed ``--select``: each set empty means "any"; ``confidence`` bounds are inclusive, None = open."""

    kinds: frozenset = frozenset()
    confidence: tuple[float | None, float | None] | None = None
    agreement: frozenset = frozenset()
    prior: frozenset = frozenset()  # exact ``prior`` values; "not applied" includes rows without a prior
    prior_missing: bool = False  # whether rows whose ``prior`` is null match (prior=not-applied)
    species: frozenset = field(default_factory=frozenset)

    def describe(self) -> str:
        """The selection in the ``--select`` syntax, e.g. ``unknown; confidence=:0.5`` (``all`` when empty)."""
        parts = [",".join(sorted(self.kinds))] if self.kinds else []
        if self.confidence:
            lo, hi = self.confidence
            parts.append(f"confidence={'' if lo is None else lo}:{'' if hi is None else hi}")
        if self.agreement:
            parts.append("agreement=" + ",".join(sorted(self.agreement)))
        if self.prior:
            parts.append("prior=" + ",".join(sorted(self.prior)) + (",(none)" if self.prior_missing else ""))
        parts += [f"species={s}" for s in sorted(self.species)]
        return "; ".join(parts) or "all"


def _values(value: str, allowed: tuple, term: str) -> frozenset:
    values = frozenset(v.strip() for v in value.split(",") if v.strip())
    bad = sorted(values - set(allowed))
    if bad or not values:
        raise ConfigError(f"--select {term!r}: {', '.join(bad) or 'no value'} is not one of {', '.join(allowed)}")
    return values


def _bound(text: str, term: str) -> float | None:
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"--select {term!r}: {text!r} is not a number; write e.g. confidence=0.2:0.6") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--select {term!r}: confidence bounds are probabilities between 0 and 1")
    return value


def _confidence(value: str, term: str) -> tuple[float | None, float | None]:
    if ":" not in value:
        raise ConfigError(f"--select {term!r}: write a range LO:HI, e.g. confidence=0.2:0.6 or confidence=:0.5")
    lo, hi = (_bound(v, term) for v in value.split(":", 1))
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"--select {term!r}: the range is empty (LO > HI)")
    return lo, hi


def _prior(value: str, term: str) -> tuple[frozenset, bool]:
    allowed = ("applied", "not-applied", "not applied", *PRIORS_APPLIED, *PRIORS_NOT_APPLIED)
    values, exact, missing = _values(value, allowed, term), set(), False
    for v in values:
        if v == "applied":
            exact.update(PRIORS_APPLIED)
        elif v in ("not-applied", "not applied"):
            exact.update(PRIORS_NOT_APPLIED)
            missing = True
        else:
            exact.add(v)
    return frozenset(exact), missing


def parse_selection(terms: list[str] | None) -> Selection:
    """Parses ``--select`` terms (see the module docstring).

    Args:
        terms: one string per ``--select`` flag; None or empty selects every row.
    Returns:
        The :class:`Selection`.
    Raises:
        ConfigError: an unknown term or value, or a malformed confidence range, naming it and the syntax.
    """
    kinds, agreement, prior, species = set(), set(), set(), set()
    confidence, prior_missing = None, False
    for term in terms or []:
        key, sep, value = term.partition("=")
        key = key.strip().lower().replace("_", "-")
        if not sep:
            kinds |= _values(term.lower().replace("rolled up", ROLLED_UP), KINDS, term)
        elif key == "confidence":
            if confidence is not None:
                raise ConfigError(f"--select {term!r}: give one confidence range")
            confidence = _confidence(value, term)
        elif key in ("agreement", "publisher-agreement"):
            agreement |= _values(value, AGREEMENTS, term)
        elif key == "prior":
            exact, missing = _prior(value, term)
            prior |= exact
            prior_missing = prior_missing or missing
        elif key == "species" and value.strip():
            species.add(value.strip())
        else:
            raise ConfigError(f"--select {term!r} is not a selection; use {', '.join(KINDS)}, confidence=LO:HI, "
                              "agreement=VALUES, prior=applied|not-applied or species=NAME")
    return Selection(frozenset(kinds), confidence, frozenset(agreement), frozenset(prior), prior_missing,
                     frozenset(species))


def selection_mask(cards: pa.Table, selection: Selection) -> pa.Array:
    """Which card rows the selection keeps (a boolean array; nulls never match a condition)."""
    keep = pa.array([True] * cards.num_rows, pa.bool_())
    conditions = []
    if selection.kinds:
        conditions.append(pc.is_in(cards["kind"], pa.array(sorted(selection.kinds), pa.string())))
    if selection.confidence:
        lo, hi = selection.confidence
        conf = cards["confidence"]
        if lo is not None:
            conditions.append(pc.greater_equal(conf, lo))
        if hi is not None:
            conditions.append(pc.less_equal(conf, hi))
    if selection.agreement:
        conditions.append(pc.is_in(cards["agreement"], pa.array(sorted(selection.agreement), pa.string())))
    if selection.prior or selection.prior_missing:
        prior = pc.is_in(cards["prior"], pa.array(sorted(selection.prior), pa.string()))
        conditions.append(pc.or_(prior, pc.is_null(cards["prior"])) if selection.prior_missing else prior)
    if selection.species:
        conditions.append(pc.is_in(cards["scientificName"], pa.array(sorted(selection.species), pa.string())))
    for condition in conditions:
        keep = pc.and_(keep, pc.fill_null(condition, False))
    return keep


def select_cards(cards: pa.Table, selection: Selection) -> pa.Table:
    """``map_batches``: the card rows the selection keeps."""
    return cards.filter(selection_mask(cards, selection))


def sample_key(key: str, seed: int) -> int:
    """A stable pseudo-random rank of a card for stratified sampling (same key and seed, same rank).

    Args:
        key: the card's key (identificationID, or the occurrence's id).
        seed: ``--seed``.
    Returns:
        A non-negative int64.
    """
    digest = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def species_group(kind: str, name: str | None, error: str | None) -> str:
    """The stratum of ``--sample-per-species``: the predicted name; unknown rows and each error reason apart."""
    if kind == ERRORS:
        return f"(error) {error or ''}"
    return name if name else "(unknown)"


def sample_group(group: pa.Table, per_species: int) -> pa.Table:
    """``map_groups``: the ``per_species`` cards of one stratum with the smallest ``_sample`` rank."""
    if group.num_rows <= per_species:
        return group
    order = pc.sort_indices(group, sort_keys=[("_sample", "ascending")])
    return group.take(order[:per_species])


def order_keys(kind: str, agreement: str | None, confidence: float | None, name: str | None,
               order: str) -> tuple[str, float]:
    """The two sort keys of a card (ascending): (a string rank, a number).

    ``agreement``: ``different`` first, then ``same genus``, ``no publisher name``, no agreement at all and
    ``same species``; least confident first within each. ``confidence``: least confident first. ``species``:
    by name, least confident first. Unknown rows sort with their confidence; error rows come last in every
    order. ``input`` keeps the read order (no sort).
    """
    conf = -1.0 if confidence is None else float(confidence)
    last = "~" if kind == ERRORS else ""
    if order == "agreement":
        return f"{last}{_AGREEMENT_RANK.get(agreement, 3)}", conf
    if order == "species":
        return f"{last}{name or '~(unknown)'}", conf
    return last, conf
