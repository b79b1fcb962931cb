"""kroute: local sentence embeddings and Avengers-Pro LLM routing, from Python.

The work runs in kroute's Rust library (the ``kroute._kroute`` extension) with the GIL released:
embedding, k-means, routing and evaluation are the same code, and give the same numbers, as the
``kroute`` command line.

    >>> import kroute
    >>> embedder = kroute.Embedder()                    # all-MiniLM-L6-v2 on the CPU
    >>> vectors = embedder.embed(["How do I merge two sorted lists?"])   # (1, 384) float32
    >>> router = kroute.Router.train("data/routerbench-3k.jsonl.gz")
    >>> router.route(["Which gas do plants absorb?"], alpha=0.8)[0]["model"]

Records are a path to a routing-records file (``.jsonl`` or ``.jsonl.gz``, as ``kroute check``
reads) or a list of dicts of the same shape. Bad input raises ``ValueError`` with the CLI's
message (file, line and field; records given as dicts are ``records:N``, counted from 1).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from . import _kroute

__all__ = [
    "Embedder",
    "Router",
    "evaluate",
    "check",
    "frontier_area",
    "pace",
    "DEFAULT_MODEL",
    "__version__",
]

DEFAULT_MODEL: str = _kroute.DEFAULT_MODEL
__version__: str = _kroute.__version__

Records = Union[str, "os.PathLike[str]", Sequence[Dict[str, Any]]]

# Keyword arguments that mirror the CLI's embedding flags (`--prompt`, `--pooling`, ...).
_EMBEDDER_OPTIONS = frozenset(
    {"prompt", "prompt_name", "pooling", "dimensions", "max_seq_length", "max_batch_tokens"}
)


def _embedder_spec(
    model: Optional[str],
    device: str,
    dtype: Optional[str],
    options: Dict[str, Any],
) -> str:
    unknown = sorted(set(options) - _EMBEDDER_OPTIONS)
    if unknown:
        raise TypeError(
            f"unexpected keyword argument {unknown[0]!r}; embedding options are "
            + ", ".join(sorted(_EMBEDDER_OPTIONS))
        )
    return json.dumps(_given({"model": model, "device": device, "dtype": dtype, **options}))


def _given(settings: Dict[str, Any]) -> Dict[str, Any]:
    """The settings given (None: the library's default, as for an unset flag)."""
    return {k: v for k, v in settings.items() if v is not None}


def _records(records: Records) -> tuple:
    """(path, None) for a file, (None, [JSON text per record]) for dicts."""
    if isinstance(records, (str, os.PathLike)):
        return os.fspath(records), None
    if isinstance(records, (bytes, dict)):
        raise TypeError("records: give a path or a list of dicts")
    return None, [json.dumps(r) if isinstance(r, dict) else _not_a_record(r) for r in records]


def _not_a_record(value: Any) -> str:
    raise TypeError(f"records: each record must be a dict, got {type(value).__name__}")


def _records_spec(
    missing_cost: str,
    exclude_models: Optional[Sequence[str]],
    exclude_datasets: Optional[Sequence[str]],
    exclusion: str,
    train_ratio: float,
) -> Dict[str, Any]:
    return {
        "missing_cost": missing_cost,
        "exclude_models": list(exclude_models or []),
        "exclude_datasets": list(exclude_datasets or []),
        "exclusion": exclusion,
        "train_ratio": train_ratio,
    }


def _embeddings(array: Any) -> np.ndarray:
    matrix = np.ascontiguousarray(array, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (queries, dim), got shape {matrix.shape}")
    return matrix


class Embedder:
    """A local sentence-embedding model.

    Args:
        model: a local directory or a Hugging Face id (``org/name[@revision]``); registered
            models (``kroute models list``) are verified and have offline mirrors.
            Default: ``sentence-transformers/all-MiniLM-L6-v2``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``metal``.
        dtype: ``f32``, ``f16``, ``bf16`` or ``int8`` (CPU only: dense layers in 8-bit
            integers; the same model as f32 for routers) (default: f32 on the CPU, f16 on GPUs,
            bf16 for Qwen3 on GPUs).
        normalize: L2-normalise the vectors (what routing expects).
        **options: the CLI's embedding flags: ``prompt``, ``prompt_name``, ``pooling``
            (``mean``/``cls``/``last``), ``dimensions``, ``max_seq_length``,
            ``max_batch_tokens``.
    """

    def __init__(
        self,
        model: Optional[str] = None,
        device: str = "cpu",
        dtype: Optional[str] = None,
        *,
        normalize: bool = True,
        **options: Any,
    ) -> None:
        self._inner = _kroute.Embedder(_embedder_spec(model, device, dtype, options), normalize)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeds ``texts`` into a float32 array ``(len(texts), dim)``, in input order."""
        if isinstance(texts, str):
            raise TypeError("embed takes a list of texts; wrap a single text in a list")
        return self._inner.embed(list(texts))

    def embed_iter(self, texts: Iterable[str], batch_size: int = 4096) -> Iterator[np.ndarray]:
        """Embeds an iterable of any length ``batch_size`` texts at a time, yielding one array
        per batch in input order; memory stays bounded by the batch."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        batch: List[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) == batch_size:
                yield self.embed(batch)
                batch = []
        if batch:
            yield self.embed(batch)

    @property
    def dim(self) -> int:
        """Dimensions of a vector."""
        return self._inner.dim

    @property
    def model_id(self) -> str:
        """The model as resolved: hub id (with revision when pinned) or local directory."""
        return self._inner.model_id

    @property
    def info(self) -> Dict[str, Any]:
        """The model identity a router records (model, revision, weights sha256, architecture,
        dim, pooling, prompt, length, normalisation)."""
        return json.loads(self._inner.info())

    def __repr__(self) -> str:
        return f"Embedder({self.model_id!r}, dim={self.dim})"


class Router:
    """A trained Avengers-Pro router: k-means clusters of query embeddings with per-cluster
    accuracy and cost of every model. Make one with :meth:`train`, :meth:`fit` or
    :meth:`load`; the directory format of :meth:`save` is the CLI's (``kroute route DIR``
    reads it, and ``Router.load`` reads the CLI's)."""

    def __init__(self, inner: "_kroute.Router") -> None:
        self._inner = inner

    @classmethod
    def train(
        cls,
        records: Records,
        *,
        clusters: int = 60,
        bag: Optional[int] = None,
        n_init: int = 10,
        max_iter: int = 300,
        tol: float = 1e-4,
        alpha: Optional[float] = None,
        top_p: Optional[int] = None,
        beta: Optional[float] = None,
        prior_strength: Optional[float] = None,
        seed: int = 42,
        use_all: bool = False,
        train_ratio: float = 0.7,
        missing_cost: str = "error",
        exclude_models: Optional[Sequence[str]] = None,
        exclude_datasets: Optional[Sequence[str]] = None,
        exclusion: str = "hard",
        model: Optional[str] = None,
        device: str = "cpu",
        dtype: Optional[str] = None,
        **options: Any,
    ) -> "Router":
        """Embeds the training queries and trains a router, as ``kroute train`` does.

        The training rows are the records' ``split == "train"`` rows when they have a split
        field, else the first ``train_ratio`` of a seeded shuffle of each dataset;
        ``use_all=True`` trains on every row. ``bag`` (default 3), ``prior_strength``
        (default 5), ``top_p`` (4), ``beta`` (9) and ``alpha`` (0.5) are the CLI's defaults;
        ``bag=1, prior_strength=0`` is the paper's router. ``**options`` are the embedding
        options of :class:`Embedder`.
        """
        settings = cls._settings(locals())
        path, texts = _records(records)
        spec = _embedder_spec(model, device, dtype, options)
        return cls(_kroute.Router.train(path, texts, json.dumps(settings), spec))

    @classmethod
    def fit(
        cls,
        embeddings: Any,
        records: Records,
        *,
        clusters: int = 60,
        bag: Optional[int] = None,
        n_init: int = 10,
        max_iter: int = 300,
        tol: float = 1e-4,
        alpha: Optional[float] = None,
        top_p: Optional[int] = None,
        beta: Optional[float] = None,
        prior_strength: Optional[float] = None,
        seed: int = 42,
        use_all: bool = False,
        train_ratio: float = 0.7,
        missing_cost: str = "error",
        exclude_models: Optional[Sequence[str]] = None,
        exclude_datasets: Optional[Sequence[str]] = None,
        exclusion: str = "hard",
        model: Optional[str] = None,
        device: str = "cpu",
        dtype: Optional[str] = None,
        **options: Any,
    ) -> "Router":
        """Trains on precomputed embeddings: one L2-normalised row per record, in record order
        (e.g. ``Embedder(model).embed(queries)``). ``model`` and ``**options`` name the model
        that made them; the router records its identity, so routing texts later embeds them
        the same way. Other arguments are :meth:`train`'s."""
        settings = cls._settings(locals())
        path, texts = _records(records)
        spec = _embedder_spec(model, device, dtype, options)
        return cls(_kroute.Router.fit(_embeddings(embeddings), path, texts, json.dumps(settings), spec))

    @staticmethod
    def _settings(args: Dict[str, Any]) -> Dict[str, Any]:
        return {
            "records": _records_spec(
                args["missing_cost"],
                args["exclude_models"],
                args["exclude_datasets"],
                args["exclusion"],
                args["train_ratio"],
            ),
            "kmeans": _given({k: args[k] for k in ("clusters", "n_init", "max_iter", "tol", "bag")}),
            "routing": _given({k: args[k] for k in ("alpha", "top_p", "beta", "prior_strength")}),
            "seed": args["seed"],
            "use_all": args["use_all"],
        }

    @classmethod
    def load(
        cls,
        path: Union[str, "os.PathLike[str]"],
        *,
        device: str = "cpu",
        model: Optional[str] = None,
        dtype: Optional[str] = None,
        **options: Any,
    ) -> "Router":
        """Loads a router directory (``kroute train -o DIR`` or :meth:`save`), or the current
        state of a ``kroute serve --state DIR`` directory (its latest snapshot and the outcomes
        logged after it, read without disturbing the server). Texts are embedded with the
        router's own model and settings; ``model`` and ``**options`` may name another copy of
        it, and vectors that would differ are refused."""
        spec = _embedder_spec(model, device, dtype, options)
        return cls(_kroute.Router.load(os.fspath(path), spec))

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the router directory (written under a temporary name, then renamed)."""
        self._inner.save(os.fspath(path))

    def route(
        self,
        queries: Union[Sequence[str], np.ndarray],
        alpha: Optional[float] = None,
        top_p: Optional[int] = None,
        beta: Optional[float] = None,
        explain: bool = False,
        *,
        prior_strength: Optional[float] = None,
        max_models: Optional[int] = None,
    ) -> List[Dict[str, Any]]:
        """Routes texts (embedded with the router's model) or L2-normalised embeddings
        ``(n, dim)``. Returns one dict per query, as ``kroute route`` prints: ``model`` (the
        choice), ``ranked`` (every model with its score, best first) and, with
        ``explain=True``, the ``clusters`` that voted (each with every model's ``scores``
        there and the ``accuracy`` and ``cost`` estimates they are made of). Unset settings are
        the router's."""
        routing = json.dumps(
            {"alpha": alpha, "top_p": top_p, "beta": beta, "prior_strength": prior_strength}
        )
        if isinstance(queries, str):
            raise TypeError("route takes a list of queries; wrap a single query in a list")
        if isinstance(queries, np.ndarray):
            decisions = self._inner.route(None, _embeddings(queries), routing, explain, max_models)
        else:
            decisions = self._inner.route(list(queries), None, routing, explain, max_models)
        return json.loads(decisions)

    def observe(
        self,
        queries: Union[Sequence[str], np.ndarray],
        model: str,
        scores: Sequence[float],
        costs: Optional[Sequence[Optional[float]]] = None,
        *,
        half_life: Optional[float] = None,
        source: str = "python",
    ) -> int:
        """Learns from outcomes: query ``i`` (a text, embedded with the router's model, or a
        row of L2-normalised embeddings) was answered by ``model`` with ``scores[i]`` in
        [0, 1] (and cost ``costs[i]`` dollars, ``None`` where unknown). Each outcome updates
        the cells of the clusters that vote for its query, weighted by their votes, on top of
        the training statistics, as ``kroute serve`` does with ``/v1/feedback``;
        ``half_life`` (observations per cell) forgets older evidence. :meth:`save` keeps what
        was learned. Returns the number of outcomes taken in."""
        if isinstance(queries, str):
            raise TypeError("observe takes a list of queries; wrap a single query in a list")
        scores = [float(s) for s in scores]
        costs = None if costs is None else [None if c is None else float(c) for c in costs]
        if isinstance(queries, np.ndarray):
            texts, embeddings = None, _embeddings(queries)
        else:
            texts, embeddings = list(queries), None
        count = len(texts) if texts is not None else embeddings.shape[0]
        if count != len(scores):
            raise ValueError(f"{count} queries for {len(scores)} scores")
        return self._inner.observe(texts, embeddings, model, scores, costs, half_life, source)

    def add_model(
        self,
        records: Optional[Records] = None,
        *,
        embeddings: Any = None,
        model: Optional[str] = None,
        prior_accuracy: Optional[float] = None,
        prior_cost: Optional[float] = None,
    ) -> List[str]:
        """Adds models without retraining, as ``kroute add-model`` does: the models named in
        ``records`` (training-record format; each record may name only some models) that the
        router lacks, from their evaluated queries (embedded with the router's model, or given
        as ``embeddings``, one row per record). Every query is assigned to the existing
        centroids; the new model's cells get counts and means, shrunk toward its accuracy
        profile with the router's prior strength. Records that also carry the router's models'
        scores (as ``suggest`` copies them) let it take out those queries' own ease. Or, with
        ``model``, ``prior_accuracy`` and ``prior_cost`` and no records, a model enters on a
        declared prior alone. With records and ``prior_accuracy`` (records that add one model),
        the declared accuracy fixes the model's mean over the training queries and its answers
        say where it is stronger or weaker. Returns the names added."""
        if model is not None:
            if records is not None or prior_accuracy is None or prior_cost is None:
                raise TypeError("add_model(model=...) takes prior_accuracy and prior_cost, not records")
            self._inner.add_model_on_prior(model, float(prior_accuracy), float(prior_cost))
            return [model]
        if records is None:
            raise TypeError("add_model needs records (or model= with a prior)")
        if prior_cost is not None:
            raise TypeError("add_model(records) takes its costs from the records, not prior_cost")
        path, texts = _records(records)
        given = None if embeddings is None else _embeddings(embeddings)
        declared = None if prior_accuracy is None else float(prior_accuracy)
        return self._inner.add_models(path, texts, given, declared)

    def remove_model(self, model: str) -> None:
        """Drops ``model`` (its statistics and what was learned about it)."""
        self._inner.remove_model(model)

    def reprice(self, prices: Dict[str, Any]) -> List[Dict[str, Any]]:
        """Recomputes costs at new prices from the token counts the router was trained with,
        as ``kroute reprice`` does. ``prices`` maps a model to ``(input, output)`` dollars per
        million tokens, or to ``{"input_per_mtok": .., "output_per_mtok": ..}``. Returns per
        model the cells repriced and its mean cost per answer before and after."""
        pairs = {}
        for name, price in prices.items():
            if isinstance(price, dict):
                price = (price["input_per_mtok"], price["output_per_mtok"])
            pairs[name] = (float(price[0]), float(price[1]))
        return json.loads(self._inner.reprice(pairs))

    def suggest(
        self,
        n: int = 50,
        records: Optional[Records] = None,
        *,
        embeddings: Any = None,
    ) -> List[Dict[str, Any]]:
        """The ``n`` records a new model should be evaluated on first, best first, as
        ``kroute suggest`` chooses them: from ``records`` (default: the router's training data
        file), records with ``"split": "test"`` excepted. Each is returned as the source has it
        (every field kept), ready to be scored and given to :meth:`add_model`."""
        if records is None:
            path, texts = None, None
        else:
            path, texts = _records(records)
        given = None if embeddings is None else _embeddings(embeddings)
        return [json.loads(line) for line in self._inner.suggest(int(n), path, texts, given)]

    @property
    def models(self) -> List[str]:
        """The models routed among, in the router's order."""
        return self._inner.models

    @property
    def info(self) -> Dict[str, Any]:
        """What router.json holds besides the clusters: embedding model, routing defaults,
        training provenance, and the outcomes learned since (``feedback``: how many, from
        where)."""
        return json.loads(self._inner.info())

    def __repr__(self) -> str:
        info = self.info
        return (
            f"Router({len(self.models)} models, {info['clusters']} clusters × {info['bag']}, "
            f"{info['embedding']['model']})"
        )


def evaluate(
    records: Records,
    *,
    embeddings: Any = None,
    alphas: Optional[Sequence[float]] = None,
    seeds: Sequence[int] = (42, 142, 242),
    clusters: int = 60,
    bag: Optional[int] = None,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
    top_p: Optional[int] = None,
    beta: Optional[float] = None,
    prior_strength: Optional[float] = None,
    train_ratio: float = 0.7,
    missing_cost: str = "error",
    exclude_models: Optional[Sequence[str]] = None,
    exclude_datasets: Optional[Sequence[str]] = None,
    exclusion: str = "hard",
    output: Optional[Union[str, "os.PathLike[str]"]] = None,
    plots: bool = True,
    model: Optional[str] = None,
    device: str = "cpu",
    dtype: Optional[str] = None,
    **options: Any,
) -> Dict[str, Any]:
    """``kroute eval``: trains one router per seed and sweeps α on the test split against every
    single model and the oracle. Returns the content of report.json (and writes the report
    directory when ``output`` is given). ``embeddings`` (one row per record, from ``model``)
    skips embedding the queries."""
    settings = {
        "records": _records_spec(missing_cost, exclude_models, exclude_datasets, exclusion, train_ratio),
        "kmeans": _given({"clusters": clusters, "n_init": n_init, "max_iter": max_iter, "tol": tol, "bag": bag}),
        "routing": _given({"top_p": top_p, "beta": beta, "prior_strength": prior_strength}),
        "alphas": list(alphas or []),
        "seeds": list(seeds),
        "output": None if output is None else os.fspath(output),
        "plots": plots,
    }
    path, texts = _records(records)
    spec = _embedder_spec(model, device, dtype, options)
    given = None if embeddings is None else _embeddings(embeddings)
    return json.loads(_kroute.evaluate(path, texts, json.dumps(settings), spec, given))


def check(records: Records, *, missing_cost: str = "error") -> Dict[str, Any]:
    """``kroute check --json``: validates every record and summarises them (queries, datasets,
    models with accuracy, cost and coverage, the split)."""
    path, texts = _records(records)
    return json.loads(_kroute.check(path, texts, missing_cost))


def frontier_area(points: Sequence[Any], reference_cost: float) -> float:
    """``kroute eval``'s area under the accuracy–cost frontier of ``(cost, accuracy)`` points:
    costs divided by ``reference_cost`` (the most accurate single model's) and capped at 1, the
    frontier the upper concave hull anchored at (0, 0). The mean accuracy reachable over every
    budget up to the reference's."""
    return _kroute.frontier_area([(float(c), float(a)) for c, a in points], float(reference_cost))


def pace(budget: float, alpha: float, spent: float, elapsed: float) -> "tuple[float, bool]":
    """``kroute serve``'s budget pacer, for replaying a budget period offline: the α to route
    at for a tenant whose own α is ``alpha``, having spent ``spent`` of ``budget`` dollars with
    ``elapsed`` (0 to 1) of the period gone, and whether the budget is spent (the tenant then
    gets the cheapest model, or is refused). α is the tenant's while the budget left is at
    least an even pace's share, and falls linearly to 0 when it is half of that."""
    return _kroute.pace(float(budget), float(alpha), float(spent), float(elapsed))
