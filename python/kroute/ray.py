"""kroute as a Ray Data stage: embed a column of any dataset Ray reads, across actors.

    import ray, kroute.ray
    ds = ray.data.read_parquet("s3://bucket/queries/")
    ds = ds.map_batches(
        kroute.ray.EmbedBatches,
        fn_constructor_kwargs={"model": "sentence-transformers/all-MiniLM-L6-v2"},
        compute=ray.data.ActorPoolStrategy(size=8),   # actors; each loads the model once
        batch_size=1024,
        num_cpus=1,             # leave CPUs for reading and writing on small machines
        # GPU actors: EmbedBatches(device="cuda") with num_gpus=1
    )
    ds.write_parquet("s3://bucket/embedded/")

Each batch comes back in the format Ray handed in (dict of numpy arrays, pandas DataFrame or
pyarrow Table) with every column intact and the embedding column added: float32 vectors, a
``(rows, dim)`` array in numpy batches, a list column in pandas, a fixed-size list in Arrow.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from . import Embedder


class EmbedBatches:
    """A callable class for ``ray.data.Dataset.map_batches``: the model loads once per actor
    (in ``__init__``), then every batch's ``column`` is embedded into ``output_column``.

    Args:
        model: the embedding model (default: all-MiniLM-L6-v2).
        column: the text column.
        output_column: the column to add.
        device: ``cpu`` (default) or ``cuda``/``cuda:N``/``metal``; with ``cuda`` run the
            actors with ``num_gpus=1``.
        dtype: ``f32``/``f16``/``bf16``/``int8`` (int8: CPU only) (default: the device's).
        **options: :class:`kroute.Embedder`'s embedding options (``prompt``, ``pooling``, ...).
    """

    def __init__(
        self,
        model: Optional[str] = None,
        column: str = "query",
        output_column: str = "embedding",
        device: Optional[str] = None,
        dtype: Optional[str] = None,
        **options: Any,
    ) -> None:
        self.column = column
        self.output_column = output_column
        self.embedder = Embedder(model, device=device or "cpu", dtype=dtype, **options)

    def __call__(self, batch: Any) -> Any:
        if isinstance(batch, dict):
            return self._numpy(batch)
        try:
            import pyarrow as pa

            if isinstance(batch, pa.Table):
                return self._arrow(batch, pa)
        except ImportError:
            pass
        try:
            import pandas as pd

            if isinstance(batch, pd.DataFrame):
                return self._pandas(batch)
        except ImportError:
            pass
        raise TypeError(
            f"EmbedBatches takes numpy (dict), pandas or pyarrow batches, got {type(batch).__name__}"
        )

    def _texts(self, values: Any, columns: Any) -> list:
        if self.column not in columns:
            raise KeyError(
                f"EmbedBatches: no column {self.column!r} in the batch (columns: {', '.join(map(str, columns))}); "
                "pass column=..."
            )
        texts = list(values)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(
                    f"EmbedBatches: column {self.column!r}, batch row {i}: expected text, got {type(text).__name__}"
                )
        return texts

    def _numpy(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        texts = self._texts(batch.get(self.column, []), batch.keys())
        return {**batch, self.output_column: self.embedder.embed(texts)}

    def _pandas(self, frame: Any) -> Any:
        texts = self._texts(frame[self.column] if self.column in frame else [], frame.columns)
        out = frame.copy(deep=False)
        out[self.output_column] = list(self.embedder.embed(texts))
        return out

    def _arrow(self, table: Any, pa: Any) -> Any:
        names = table.column_names
        texts = self._texts(table.column(self.column).to_pylist() if self.column in names else [], names)
        vectors = self.embedder.embed(texts)
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
        return table.append_column(self.output_column, column)
