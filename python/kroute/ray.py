"""kroute as a Ray Data stage: embed a column of any dataset Ray reads, across actors.

    import ray, kroute.ray
    ds = ray.data.read_parquet("s3://bucket/queries/")
    ds = kroute.ray.embed(ds, column="query", actors=8)     # device="cuda": one GPU per actor
    ds.write_parquet("s3://bucket/embedded/")

:func:`embed` sizes the actors to the cluster: actors that reserve every CPU starve Ray's read
and write tasks (the pipeline then waits forever), and encoders that each use every core of a
machine shared with other actors oversubscribe it. :class:`EmbedBatches` is the stage itself,
for ``map_batches`` with settings of one's own.

Each batch comes back in the format Ray handed in (dict of numpy arrays, pandas DataFrame or
pyarrow Table) with every column intact and the embedding column added: float32 vectors, a
``(rows, dim)`` array in numpy batches, a list column in pandas, a fixed-size list in Arrow.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from . import Embedder


def embed(
    ds: Any,
    column: str = "query",
    *,
    actors: int = 2,
    model: Optional[str] = None,
    output_column: str = "embedding",
    device: str = "cpu",
    dtype: Optional[str] = None,
    batch_size: int = 1024,
    cpus_per_actor: Optional[float] = None,
    **options: Any,
) -> Any:
    """``ds`` with ``column`` embedded into ``output_column`` by ``actors`` actors, each loading
    the model once (:class:`EmbedBatches`).

    On the CPU each actor reserves ``cpus_per_actor`` CPUs (default: an equal share of the
    cluster's CPUs less one, which is left to reading and writing, and at most 1 when that
    leaves less than one each) and its encoder runs that many threads (at least one). With
    ``device="cuda"`` each actor takes one GPU and one CPU. ``**options`` are
    :class:`kroute.Embedder`'s embedding options.
    """
    import ray

    if actors < 1:
        raise ValueError(f"actors must be at least 1, got {actors}")
    gpu = device.startswith("cuda")
    cpus = cpus_per_actor
    if cpus is None:
        total = ray.cluster_resources().get("CPU", 1.0)
        cpus = 1.0 if gpu else max(0.25, (total - 1.0) / actors)
        if cpus > 1.0:
            cpus = math.floor(cpus)
    threads = max(1, math.floor(cpus))
    return ds.map_batches(
        EmbedBatches,
        fn_constructor_kwargs={
            "model": model,
            "column": column,
            "output_column": output_column,
            "device": device,
            "dtype": dtype,
            **options,
        },
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_size,
        num_cpus=cpus,
        num_gpus=1 if gpu else 0,
        # The encoder's thread pool is sized from this when the actor's process starts.
        runtime_env={"env_vars": {"RAYON_NUM_THREADS": str(threads)}},
        batch_format="pyarrow",
    )


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
