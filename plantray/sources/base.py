"""What every input kind offers: its columns, its checks, its rows as a Ray Dataset, its label counts.

A :class:`Source` is made on the driver by :func:`plantray.sources.open_source`. ``columns()``, ``check()``
and (for manifests and trees) ``label_counts()`` need no Ray, so a command refuses a bad input before it
starts or joins a cluster; only ``dataset()`` builds Ray work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plantray.columns import IMAGE_URI, SCIENTIFIC_NAME
from plantray.config import ConfigError

if TYPE_CHECKING:
    import ray

LABEL = SCIENTIFIC_NAME
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")
# Rows per block handed to the CPU stages. A manifest file is one block when read; split it so decoding
# runs as many parallel tasks instead of one long one (a few JPEG decodes per row is ~10 ms of work).
BLOCK_ROWS = 64


def describe(uri: str, flag: str) -> str:
    """How messages name an input: ``--input '/data/x.parquet'``, or ``--test t=/data/x.parquet`` for a flag
    ending in ``=``."""
    return f"{flag}{uri}" if flag.endswith("=") else f"{flag} {uri!r}"


class Source:
    """An input (manifest, image tree or Darwin Core Archive) named by a URI and the flag that gave it.

    Args:
        uri: the input, local or object storage.
        flag: the CLI flag that named it, for error messages (``--input``, ``--data``; a flag ending in
            ``=`` such as ``--test NAME=`` is written right before the URI).
    """

    kind = "input"

    def __init__(self, uri: str, flag: str = "--input"):
        self.uri = uri
        self.flag = flag

    @property
    def name(self) -> str:
        """How messages name this input (see :func:`describe`)."""
        return describe(self.uri, self.flag)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    def columns(self, labels_from_dirs: bool = False) -> list[str]:
        """The input's own column names, known without Ray (before reserved renames; ``_source`` not included).

        Args:
            labels_from_dirs: whether directory labels count as a column (image trees only).
        """
        raise NotImplementedError

    def check(self) -> None:
        """Every structural check that needs no Ray; results are cached, so calling again is free.

        Raises:
            ConfigError: naming the input, the problem and the fix.
        """

    def dataset(self, reserved: frozenset = frozenset(),
                labels_from_dirs: bool = False) -> tuple[ray.data.Dataset, dict]:
        """The input as a lazy Ray Dataset in blocks of at most :data:`BLOCK_ROWS` rows.

        Args:
            reserved: output column names; input columns of these names are renamed ``input_<name>``
                (manifests and archives).
            labels_from_dirs: ImageFolder labels in ``scientificName`` (image trees).
        Returns:
            (dataset, statistics). Every dataset has ``image_uri`` (as given), ``_source`` (the resolved URI
            to read) and the input's other columns; statistics are the archive's counts, else empty.
        Raises:
            ConfigError: what :meth:`check` refuses.
        """
        self.check()
        ds, stats = self._read(frozenset(reserved), labels_from_dirs)
        return ds.repartition(target_num_rows_per_block=BLOCK_ROWS), stats

    def label_counts(self) -> dict:
        """Images per ``scientificName`` (None = unlabelled), reading only the labels.

        Raises:
            ConfigError: the input has no ``scientificName`` or fails :meth:`check`.
        """
        self.check()
        if LABEL not in self.columns(labels_from_dirs=True):
            raise ConfigError(f"{self.name}: no {LABEL} column (columns: {self.columns()[:10]}); a labelled "
                              f"input is a manifest with {IMAGE_URI} and {LABEL} or an ImageFolder tree")
        return self._count_labels()

    def _read(self, reserved: frozenset, labels_from_dirs: bool) -> tuple[ray.data.Dataset, dict]:
        raise NotImplementedError

    def _count_labels(self) -> dict:
        raise NotImplementedError
