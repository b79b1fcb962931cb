import numpy as np
import pytest

import kroute


@pytest.fixture(scope="module")
def embedder():
    return kroute.Embedder()


def test_embed_equals_the_rust_library(embedder, cli, queries, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(q.replace("\n", " ") for q in queries[:200]) + "\n")
    cli("embed", texts, "-o", tmp_path / "cli.npy", "--quiet")
    expected = np.load(tmp_path / "cli.npy")
    got = embedder.embed(texts.read_text().splitlines())
    assert got.dtype == np.float32 and got.shape == (200, 384) == expected.shape
    assert np.abs(got - expected).max() <= 1e-6
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_embed_iter_keeps_input_order(embedder, queries):
    texts = queries[:50]
    parts = list(embedder.embed_iter(iter(texts), batch_size=16))
    assert [len(p) for p in parts] == [16, 16, 16, 2]
    assert np.abs(np.concatenate(parts) - embedder.embed(texts)).max() <= 1e-6


def test_properties_and_options(embedder):
    assert embedder.dim == 384
    assert "all-MiniLM-L6-v2" in embedder.model_id
    assert embedder.info["architecture"] == "bert"
    short = kroute.Embedder(dimensions=64, max_seq_length=16)
    vectors = short.embed(["a question about routing", "another one"])
    assert vectors.shape == (2, 64) and short.dim == 64
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_int8_is_the_same_model_within_cosine_099(embedder, queries):
    int8 = kroute.Embedder(dtype="int8")
    assert int8.info == embedder.info
    texts = queries[:64]
    cosines = (int8.embed(texts) * embedder.embed(texts)).sum(axis=1)
    assert cosines.min() >= 0.99


def test_bad_arguments_raise(embedder):
    with pytest.raises(TypeError, match="wrap a single text"):
        embedder.embed("not a list")
    with pytest.raises(TypeError, match="unexpected keyword argument 'promt'"):
        kroute.Embedder(promt="query: ")
    with pytest.raises(ValueError, match="--dimensions 999"):
        kroute.Embedder(dimensions=999)
    with pytest.raises(ValueError, match="pooling"):
        kroute.Embedder(pooling="max")
    with pytest.raises(FileNotFoundError):
        kroute.Embedder("/nonexistent/model-dir")
