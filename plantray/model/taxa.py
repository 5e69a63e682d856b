"""Streaming a taxonomic checklist's text files: only the rows naming a label, never the whole file.

A checklist (the GBIF Backbone's ``Taxon.tsv``, the Catalogue of Life's ``NameUsage.tsv``) has millions of rows,
so it is read with pyarrow's streaming CSV reader, batch by batch, all columns as strings, and each batch is
filtered to the rows wanted. Names are compared in their canonical form (:func:`plantray.names.canonical`): a
cheap vectorised genus filter first, then the exact canonical name in Python on the few rows left.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from plantray import storage
from plantray.names import HYBRID_SIGN, canonical
from plantray.sources.dwcameta import open_member

_BLOCK = 8 * 1024**2  # bytes per streamed CSV block


@dataclasses.dataclass
class TextFile:
    """One delimited text file: a plain file (``member`` empty) or a member of an archive (zip, tar.gz or
    directory); its dialect; and, for files without a header, term -> column index (from meta.xml)."""

    archive: str
    member: str = ""
    delimiter: str = "\t"
    quote: str = ""
    header_lines: int = 1
    encoding: str = "utf-8"
    indexes: dict = dataclasses.field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.archive!r}" + (f" ({self.member})" if self.member else "")

    def open(self):
        """The file's bytes, opened for streaming."""
        if not self.member:
            fs, path = storage.get_fs(self.archive)
            return fs.open(path, "rb")
        return open_member(self.archive, self.member)

    def header(self) -> list[str]:
        """The column names of the header line, parsed with the file's own dialect (a quoted name may hold
        the delimiter); empty for a file read by meta.xml's indexes."""
        if self.indexes:
            return []
        with self.open() as raw:
            line = raw.readline().decode(self.encoding).lstrip("\ufeff")
        quoting = {"quotechar": self.quote} if self.quote else {"quoting": csv.QUOTE_NONE}
        return [c.strip() for c in next(csv.reader([line], delimiter=self.delimiter, **quoting), [])]

    def columns(self, wanted: Callable[[str], str | None]) -> dict[str, str]:
        """Reader column name -> term, for the columns ``wanted`` maps to a term (the header's names, or
        pyarrow's ``f<i>`` for a headerless file)."""
        if self.indexes:
            pairs = [(f"f{i}", wanted(term)) for term, i in self.indexes.items()]
        else:
            pairs = [(name, wanted(name)) for name in self.header()]
        found: dict[str, str] = {}
        for name, term in pairs:
            if term and term not in found.values():
                found[name] = term
        return found

    def batches(self, names: dict[str, str], skipped: list) -> Iterator[pa.Table]:
        """The file's rows, batch by batch: the columns ``names`` (reader name -> term) renamed to their
        terms, as strings (empty -> null). Malformed lines are counted in ``skipped``, not fatal."""
        def skip(_row) -> str:
            skipped.append(1)
            return "skip"

        parse = pacsv.ParseOptions(delimiter=self.delimiter, quote_char=self.quote or False,
                                   invalid_row_handler=skip)
        read = pacsv.ReadOptions(block_size=_BLOCK, encoding=self.encoding,
                                 skip_rows=self.header_lines if self.indexes else 0,
                                 autogenerate_column_names=bool(self.indexes))
        convert = pacsv.ConvertOptions(include_columns=list(names), column_types={n: pa.string() for n in names},
                                       strings_can_be_null=True)
        with self.open() as raw:
            for batch in pacsv.open_csv(raw, read_options=read, parse_options=parse, convert_options=convert):
                table = pa.Table.from_batches([batch])
                yield table.rename_columns([names[n] for n in table.column_names])


def with_columns(table: pa.Table, terms: tuple[str, ...]) -> pa.Table:
    """``table`` with exactly ``terms`` as columns, in that order (absent ones null)."""
    return pa.table({t: table.column(t) if t in table.column_names else pa.nulls(table.num_rows, pa.string())
                     for t in terms})


def name_key(name: str | None) -> str | None:
    """The form in which checklist names and labels are compared: the canonical name (infraspecific, species
    or genus), hybrid sign normalised; the name itself when it has no canonical form."""
    return canonical(name).name or (name.strip() if name else None)


def genus_of(names: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The first word of each name, an intergeneric hybrid's sign joined to it (``× Triticosecale`` ->
    ``×Triticosecale``), as :func:`plantray.names.canonical` writes the genus."""
    joined = pc.replace_substring_regex(names, rf"^[{HYBRID_SIGN}xX]\s+", HYBRID_SIGN)
    return pc.list_element(pc.split_pattern(pc.utf8_trim_whitespace(joined), " ", max_splits=1), 0)


def rows_named(table: pa.Table, column: str, keys: set[str]) -> pa.Table:
    """The rows of ``table`` whose ``column`` names one of ``keys`` (compared by :func:`name_key`), with a
    ``_key`` column holding that key. Vectorised genus filter first, so Python sees only the candidates."""
    genera = pa.array(sorted({k.split(" ", 1)[0] for k in keys}), pa.string())
    names = table.column(column)
    candidates = table.filter(pc.fill_null(pc.is_in(genus_of(names), value_set=genera), False))
    found = [name_key(n) for n in candidates.column(column).to_pylist()]
    mask = pa.array([k in keys for k in found], pa.bool_())
    return candidates.filter(mask).append_column("_key", pa.array([k for k in found if k in keys], pa.string()))


def rows_in(table: pa.Table, column: str, values: set[str]) -> pa.Table:
    """The rows of ``table`` whose ``column`` is one of ``values`` (exact)."""
    wanted = pa.array(sorted(values), pa.string())
    return table.filter(pc.fill_null(pc.is_in(table.column(column), value_set=wanted), False))


def concat(tables: list[pa.Table], terms: tuple[str, ...]) -> pa.Table:
    """The tables (each with ``terms``) as one; an empty table with those columns when there are none."""
    return pa.concat_tables(tables) if tables else pa.schema([(t, pa.string()) for t in terms]).empty_table()
