"""kroute.ray.EmbedBatches on a local Ray cluster: 2 actors give the vectors of one process."""

import os

import numpy as np
import pytest

import kroute

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

from kroute.ray import EmbedBatches  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def table(queries):
    texts = (queries * 4)[:2000]
    return pa.table({
        "id": [f"q{i:05d}" for i in range(len(texts))],
        "query": texts,
        "dataset": [f"d{i % 7}" for i in range(len(texts))],
    })


def test_two_actors_give_the_single_process_vectors(cluster, table, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for part in range(4):
        pq.write_table(table.slice(part * 500, 500), src / f"part-{part}.parquet")
    class Tagged(EmbedBatches):
        """Tags each row with the actor that embedded it."""

        def __call__(self, batch):
            out = super().__call__(batch)
            return {**out, "actor": np.full(len(out["id"]), os.getpid())}

    # Eight blocks, so that both actors get work; half a CPU each leaves one for reading.
    ds = ray.data.read_parquet(str(src)).repartition(8).map_batches(
        Tagged, compute=ray.data.ActorPoolStrategy(size=2), batch_size=250, num_cpus=0.5, batch_format="numpy"
    )
    out = tmp_path / "out"
    ds.write_parquet(str(out))
    got = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("*.parquet"))]).to_pandas()
    got = got.sort_values("id").reset_index(drop=True)

    assert list(got["id"]) == table.column("id").to_pylist()
    assert list(got["query"]) == table.column("query").to_pylist()
    assert list(got["dataset"]) == table.column("dataset").to_pylist()
    assert got["actor"].nunique() == 2
    vectors = np.stack(got["embedding"].to_numpy()).astype(np.float32)
    expected = kroute.Embedder().embed(table.column("query").to_pylist())
    assert vectors.shape == expected.shape == (2000, 384)
    # Other batches pad differently; the masked encoder makes that invisible up to rounding.
    assert np.abs(vectors - expected).max() <= 1e-5


def test_every_batch_format_passes_other_columns_through(table):
    stage = EmbedBatches(column="query", output_column="vec")
    small = table.slice(0, 5)
    expected = kroute.Embedder().embed(small.column("query").to_pylist())

    as_numpy = stage({name: np.array(small.column(name).to_pylist(), dtype=object) for name in small.column_names})
    assert as_numpy["vec"].shape == (5, 384) and list(as_numpy["id"]) == small.column("id").to_pylist()
    assert np.abs(as_numpy["vec"] - expected).max() <= 1e-6

    as_pandas = stage(small.to_pandas())
    assert list(as_pandas.columns) == ["id", "query", "dataset", "vec"]
    assert np.abs(np.stack(as_pandas["vec"]) - expected).max() <= 1e-6

    as_arrow = stage(small)
    assert as_arrow.column_names == ["id", "query", "dataset", "vec"]
    assert pa.types.is_fixed_size_list(as_arrow.schema.field("vec").type)
    assert np.abs(np.array(as_arrow.column("vec").to_pylist(), np.float32) - expected).max() <= 1e-6


def test_a_missing_column_is_named(table):
    with pytest.raises(KeyError, match="no column 'text'"):
        EmbedBatches(column="text")(table.slice(0, 2))


def test_embed_sizes_actors_to_a_small_cluster(cluster, table, tmp_path):
    # Ray's usual idiom with whole-CPU actors hangs on 2 CPUs (the actors starve the read
    # tasks); kroute.ray.embed leaves a CPU to reading and gives each actor's encoder one thread.
    import kroute.ray

    ds = ray.data.from_arrow(table.slice(0, 400)).repartition(4)
    ds = kroute.ray.embed(ds, "query", actors=2, output_column="vec", batch_size=100)
    out = tmp_path / "helper"
    ds.write_parquet(str(out))
    got = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("*.parquet"))]).to_pandas()
    got = got.sort_values("id").reset_index(drop=True)
    assert list(got["id"]) == table.slice(0, 400).column("id").to_pylist()
    expected = kroute.Embedder().embed(table.slice(0, 400).column("query").to_pylist())
    assert np.abs(np.stack(got["vec"].to_numpy()).astype(np.float32) - expected).max() <= 1e-5


def test_embed_refuses_no_actors(cluster, table):
    import kroute.ray

    with pytest.raises(ValueError, match="actors must be at least 1"):
        kroute.ray.embed(ray.data.from_arrow(table.slice(0, 4)), actors=0)
