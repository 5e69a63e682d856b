"""The calibrate variant of the predictor: each image's raw logits and its true label's index.

``plantray calibrate`` streams these rows to the driver, where the temperature is fitted
(:func:`plantray.evaluation.calibration.fit_temperature`); they are never written out.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from plantray import columns as col
from plantray.images.loader import stack_pixels
from plantray.inference.predictor import Predictor, scatter


class LogitPredictor(Predictor):
    """``map_batches`` actor: decoded rows in; ``label_index``, ``logits`` and ``error`` out.

    ``logits`` holds ``crops x classes`` float32 values per image (crop-major), before any temperature;
    ``label_index`` is -1 for a label the model does not know. Failed rows keep their ``error``.

    Args:
        model_uri: plantray model directory.
        kwargs: as :class:`~plantray.inference.predictor.Predictor` (device, precision, threads, crops).
    """

    def __init__(self, model_uri: str, **kwargs):
        super().__init__(model_uri, **kwargs)
        self.index = {name: i for i, name in enumerate(self.labels.names)}

    def __call__(self, table: pa.Table) -> pa.Table:
        size, n = self.net.preset.crop_size, table.num_rows
        images, rows = stack_pixels(table.column(col.PIXELS), (self.crops, size, size, 3))
        width = self.crops * len(self.labels)
        logits = (self.net.logits(images).numpy().reshape(len(rows), width) if len(rows)
                  else np.zeros((0, width), np.float32))
        true = table.column(col.SCIENTIFIC_NAME).to_pylist()
        index = [self.index.get(true[r], -1) for r in rows]
        self.report(table)
        return pa.table({col.LABEL_INDEX: pa.array(scatter(index, rows, n), pa.int32()),
                         col.LOGITS: pa.array(scatter(list(logits), rows, n), pa.list_(pa.float32(), width)),
                         col.ERROR: table.column(col.ERROR)})
