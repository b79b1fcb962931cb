//! `kroute._kroute`: the library's embedder, router, evaluation and records check for the
//! Python package in `kroute/`, which holds the public API, its signatures and its docs.
//!
//! Every call releases the GIL while Rust computes. Settings arrive as JSON and are checked by
//! serde, so a bad value is refused naming its field; results that the CLI prints as JSON
//! (decisions, report.json, the records summary) leave as JSON text with the same content.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use candle_core::{Device, Tensor};
use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use kroute::embed::EmbeddingInfo;
use kroute::eval::{alpha_grid, evaluate as run_evaluation, EvalConfig, Report};
use kroute::model::DEFAULT_MODEL;
use kroute::records::{MissingCost, RoutingData};
use kroute::router::{ModelPrior, Price, RouteParams, Router as CoreRouter};
use kroute::settings::{EmbedderSettings, KMeansSettings, RecordsSettings, RoutingSettings};
use kroute::{Embedder as CoreEmbedder, Error};

/// As in the `kroute` binary: glibc's malloc returns the encoder's large per-layer buffers to
/// the kernel at every free, and page-faults them back in for the next layer.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bad input (`ValueError`, with the CLI's file/line/field message), a missing file or model
/// (`FileNotFoundError`), anything else (`RuntimeError`).
fn py_err(err: Error) -> PyErr {
    let message = err.to_string();
    match err {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(message)
        }
        Error::Model(_) => PyFileNotFoundError::new_err(message),
        Error::Input(_) | Error::Invalid(_) | Error::Tokenizer(_) | Error::Device(_) => {
            PyValueError::new_err(message)
        }
        _ => PyRuntimeError::new_err(message),
    }
}

fn from_json<T: DeserializeOwned>(what: &str, json: &str) -> PyResult<T> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        PyValueError::new_err(format!("{what} `{path}`: {}", e.into_inner()))
    })
}

/// A records file, or records in memory as one JSON object text each.
enum RecordsSource {
    Path(PathBuf),
    Json(Vec<String>),
}

impl RecordsSource {
    fn new(path: Option<PathBuf>, json: Option<Vec<String>>) -> PyResult<Self> {
        match (path, json) {
            (Some(path), None) => Ok(Self::Path(path)),
            (None, Some(json)) => Ok(Self::Json(json)),
            _ => Err(PyValueError::new_err(
                "give records as a path or as JSON texts",
            )),
        }
    }

    /// Reads and validates the records as `settings` say; errors name the file (or `records`)
    /// and the line.
    fn read(&self, settings: &RecordsSettings) -> kroute::Result<RoutingData> {
        match self {
            Self::Path(path) => settings.read(path),
            Self::Json(texts) => settings.prepare(RoutingData::from_json_texts(
                "records",
                texts.iter().cloned(),
                settings.missing_cost,
            )?),
        }
    }
}

/// `Router.train`/`Router.fit`: which rows train and how.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainSpec {
    records: RecordsSettings,
    kmeans: KMeansSettings,
    routing: RoutingSettings,
    seed: u64,
    use_all: bool,
}

impl TrainSpec {
    /// The training rows of `data`.
    fn rows(&self, data: &RoutingData) -> kroute::Result<Vec<usize>> {
        let split = data.split(&self.records.split_options(self.seed))?;
        Ok(if self.use_all {
            let mut all = [split.train, split.test].concat();
            all.sort_unstable();
            all
        } else {
            split.train
        })
    }

    fn fit(
        &self,
        data: &RoutingData,
        rows: &[usize],
        embeddings: &Tensor,
        embedding: EmbeddingInfo,
    ) -> kroute::Result<CoreRouter> {
        CoreRouter::fit_bagged(
            embeddings,
            data,
            rows,
            &self.kmeans.config(self.seed, rows.len())?,
            self.kmeans.bag,
            embedding,
            self.routing.resolve(RouteParams::recommended())?,
        )
    }
}

/// `(n, dim)` f32 on the host → numpy, moving the vector into the array (no second copy).
fn to_numpy<'py>(
    py: Python<'py>,
    values: Vec<f32>,
    rows: usize,
    dim: usize,
) -> PyResult<Bound<'py, numpy::PyArray2<f32>>> {
    PyArray1::from_vec(py, values).reshape([rows, dim])
}

fn host_vec(tensor: &Tensor) -> kroute::Result<Vec<f32>> {
    Ok(tensor.flatten_all()?.to_vec1::<f32>()?)
}

/// A C-contiguous `(n, dim)` float32 array as a tensor on `device`.
fn to_tensor(array: &PyReadonlyArray2<'_, f32>, device: &Device) -> PyResult<Tensor> {
    let (rows, dim) = (array.shape()[0], array.shape()[1]);
    let values = array
        .as_slice()
        .map_err(|_| PyValueError::new_err("embeddings must be a C-contiguous float32 array"))?;
    Tensor::from_slice(values, (rows, dim), device).map_err(|e| py_err(e.into()))
}

/// Precomputed embeddings must hold one row per record, of `embedder`'s dimensions.
fn check_one_row_per_record(
    embeddings: &Tensor,
    data: &RoutingData,
    embedder: &CoreEmbedder,
) -> kroute::Result<()> {
    let (rows, dim) = embeddings.dims2()?;
    if rows != data.records.len() || dim != embedder.dim() {
        return Err(Error::Invalid(format!(
            "embeddings: expected one {}-dimensional row per record ({} × {}, from {}), got {rows} × {dim}",
            embedder.dim(),
            data.records.len(),
            embedder.dim(),
            embedder.model().id
        )));
    }
    Ok(())
}

#[pyclass(frozen, module = "kroute._kroute")]
struct Embedder {
    inner: Arc<CoreEmbedder>,
}

#[pymethods]
impl Embedder {
    #[new]
    fn new(py: Python<'_>, spec: &str, normalize: bool) -> PyResult<Self> {
        let spec: EmbedderSettings = from_json("embedder option", spec)?;
        let inner = py.detach(|| spec.load(normalize)).map_err(py_err)?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<Bound<'py, numpy::PyArray2<f32>>> {
        let dim = self.inner.dim();
        let values = py
            .detach(|| self.inner.embed(&texts).and_then(|t| host_vec(&t)))
            .map_err(py_err)?;
        to_numpy(py, values, texts.len(), dim)
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    #[getter]
    fn model_id(&self) -> String {
        self.inner.model().id.clone()
    }

    /// The model identity a router records (JSON).
    fn info(&self) -> String {
        serde_json::to_string(&EmbeddingInfo::of(&self.inner)).expect("serialisable")
    }
}

#[pyclass(frozen, module = "kroute._kroute")]
struct Router {
    /// Written by `observe`, read by everything else.
    inner: RwLock<CoreRouter>,
    /// How to load the embedder for routing texts (flags not given follow the router).
    spec: EmbedderSettings,
    /// Loaded on the first text to route (or kept from training).
    embedder: Mutex<Option<Arc<CoreEmbedder>>>,
}

impl Router {
    fn new(inner: CoreRouter, spec: EmbedderSettings, embedder: Option<CoreEmbedder>) -> Self {
        Self {
            inner: RwLock::new(inner),
            spec,
            embedder: Mutex::new(embedder.map(Arc::new)),
        }
    }

    fn router(&self) -> RwLockReadGuard<'_, CoreRouter> {
        self.inner.read().expect("not poisoned")
    }

    fn embedder(&self) -> kroute::Result<Arc<CoreEmbedder>> {
        let mut slot = self.embedder.lock().expect("not poisoned");
        if slot.is_none() {
            let expected = self.router().embedding.clone();
            *slot = Some(Arc::new(self.spec.load_matching(&expected, "the router")?));
        }
        Ok(slot.clone().expect("just set"))
    }

    /// `texts` embedded with the router's model, or `embeddings` checked against its
    /// dimension, on the router's device.
    fn queries(
        &self,
        texts: Option<&[String]>,
        embeddings: Option<PyReadonlyArray2<'_, f32>>,
    ) -> PyResult<QueryInput> {
        match (embeddings, texts) {
            (Some(array), _) => {
                let router = self.router();
                let dim = router.embedding.dim;
                if array.shape()[1] != dim {
                    return Err(PyValueError::new_err(format!(
                        "embeddings have {} dimensions; the router's model ({}) gives {dim}",
                        array.shape()[1],
                        router.embedding.model
                    )));
                }
                Ok(QueryInput::Embedded(to_tensor(&array, router.device())?))
            }
            (None, Some(texts)) => Ok(QueryInput::Texts(texts.to_vec())),
            (None, None) => Err(PyValueError::new_err("no queries given")),
        }
    }
}

/// Queries as given: vectors ready on the device, or texts still to embed (without the GIL).
enum QueryInput {
    Embedded(Tensor),
    Texts(Vec<String>),
}

impl QueryInput {
    fn embed(self, router: &Router) -> kroute::Result<Tensor> {
        match self {
            QueryInput::Embedded(tensor) => Ok(tensor),
            QueryInput::Texts(texts) => router.embedder()?.embed(&texts),
        }
    }
}

#[pymethods]
impl Router {
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf, spec: &str) -> PyResult<Self> {
        let spec: EmbedderSettings = from_json("embedder option", spec)?;
        let inner = py
            .detach(|| kroute::state::open_router(&path, &spec.device.open()?))
            .map_err(py_err)?;
        Ok(Self::new(inner, spec, None))
    }

    #[staticmethod]
    #[pyo3(signature = (path, json, settings, spec))]
    fn train(
        py: Python<'_>,
        path: Option<PathBuf>,
        json: Option<Vec<String>>,
        settings: &str,
        spec: &str,
    ) -> PyResult<Self> {
        let source = RecordsSource::new(path, json)?;
        let settings: TrainSpec = from_json("setting", settings)?;
        let spec: EmbedderSettings = from_json("embedder option", spec)?;
        let (inner, embedder) = py
            .detach(|| -> kroute::Result<_> {
                let data = source.read(&settings.records)?;
                let rows = settings.rows(&data)?;
                let embedder = spec.load(true)?;
                let texts: Vec<&str> = rows
                    .iter()
                    .map(|&i| data.records[i].query.as_str())
                    .collect();
                let embeddings = embedder.embed(&texts)?;
                let router =
                    settings.fit(&data, &rows, &embeddings, EmbeddingInfo::of(&embedder))?;
                Ok((router, embedder))
            })
            .map_err(py_err)?;
        Ok(Self::new(inner, spec, Some(embedder)))
    }

    #[staticmethod]
    #[pyo3(signature = (embeddings, path, json, settings, spec))]
    fn fit(
        py: Python<'_>,
        embeddings: PyReadonlyArray2<'_, f32>,
        path: Option<PathBuf>,
        json: Option<Vec<String>>,
        settings: &str,
        spec: &str,
    ) -> PyResult<Self> {
        let source = RecordsSource::new(path, json)?;
        let settings: TrainSpec = from_json("setting", settings)?;
        let spec: EmbedderSettings = from_json("embedder option", spec)?;
        let device = spec.device.open().map_err(py_err)?;
        let all = to_tensor(&embeddings, &device)?;
        let (inner, embedder) = py
            .detach(|| -> kroute::Result<_> {
                let data = source.read(&settings.records)?;
                // The model the vectors came from: its identity goes into the router.
                let embedder = spec.load(true)?;
                check_one_row_per_record(&all, &data, &embedder)?;
                let train = settings.rows(&data)?;
                let index: Vec<u32> = train.iter().map(|&i| i as u32).collect();
                let index = Tensor::from_vec(index, train.len(), &device)?;
                let embeddings = all.index_select(&index, 0)?;
                let router =
                    settings.fit(&data, &train, &embeddings, EmbeddingInfo::of(&embedder))?;
                Ok((router, embedder))
            })
            .map_err(py_err)?;
        Ok(Self::new(inner, spec, Some(embedder)))
    }

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.router().save(&path)).map_err(py_err)
    }

    /// Takes in outcomes: query `i` was answered by `model` with `scores[i]` (and
    /// `costs[i]` dollars, when known). Returns the outcomes taken in.
    #[pyo3(signature = (texts, embeddings, model, scores, costs, half_life, source))]
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &self,
        py: Python<'_>,
        texts: Option<Vec<String>>,
        embeddings: Option<PyReadonlyArray2<'_, f32>>,
        model: &str,
        scores: Vec<f64>,
        costs: Option<Vec<Option<f64>>>,
        half_life: Option<f64>,
        source: &str,
    ) -> PyResult<u64> {
        let index = self
            .router()
            .models
            .iter()
            .position(|m| m == model)
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "model `{model}` is not one of the router's: {}",
                    self.router().models.join(", ")
                ))
            })?;
        let costs = costs.unwrap_or_else(|| vec![None; scores.len()]);
        if costs.len() != scores.len() {
            return Err(PyValueError::new_err(format!(
                "{} costs for {} scores",
                costs.len(),
                scores.len()
            )));
        }
        let queries = self.queries(texts.as_deref(), embeddings)?;
        py.detach(|| -> kroute::Result<u64> {
            let queries = queries.embed(self)?;
            let outcomes: Vec<Vec<(usize, f64, Option<f64>)>> = scores
                .iter()
                .zip(&costs)
                .map(|(&score, &cost)| vec![(index, score, cost)])
                .collect();
            let mut router = self.inner.write().expect("not poisoned");
            let params = router.defaults;
            router.observe_queries(&queries, &outcomes, &params, half_life, source)
        })
        .map_err(py_err)
    }

    /// Routes texts or L2-normalised embeddings; one decision (JSON object) per query, as a
    /// JSON array.
    #[pyo3(signature = (texts, embeddings, routing, explain, max_models))]
    fn route(
        &self,
        py: Python<'_>,
        texts: Option<Vec<String>>,
        embeddings: Option<PyReadonlyArray2<'_, f32>>,
        routing: &str,
        explain: bool,
        max_models: Option<usize>,
    ) -> PyResult<String> {
        let routing: RoutingSettings = from_json("routing option", routing)?;
        let params = routing.resolve(self.router().defaults).map_err(py_err)?;
        let queries = self.queries(texts.as_deref(), embeddings)?;
        py.detach(|| -> kroute::Result<String> {
            let queries = queries.embed(self)?;
            let router = self.router();
            let routed = router.route(&queries, &params)?;
            let decisions: Vec<serde_json::Value> = (0..routed.len())
                .map(|i| {
                    serde_json::Value::Object(
                        router.decision_json(&routed, i, &params, max_models, explain),
                    )
                })
                .collect();
            Ok(serde_json::to_string(&decisions).expect("serialisable"))
        })
        .map_err(py_err)
    }

    /// Adds the models of the records that the router lacks (`kroute add-model`), the one
    /// model's level at `declared_accuracy` if given; returns their names.
    #[pyo3(signature = (path, json, embeddings=None, declared_accuracy=None))]
    fn add_models(
        &self,
        py: Python<'_>,
        path: Option<PathBuf>,
        json: Option<Vec<String>>,
        embeddings: Option<PyReadonlyArray2<'_, f32>>,
        declared_accuracy: Option<f64>,
    ) -> PyResult<Vec<String>> {
        let source = RecordsSource::new(path, json)?;
        let given = embeddings
            .map(|a| to_tensor(&a, self.router().device()))
            .transpose()?;
        py.detach(|| -> kroute::Result<Vec<String>> {
            let data = match &source {
                RecordsSource::Path(path) => RoutingData::read_outcomes(path)?,
                RecordsSource::Json(texts) => {
                    RoutingData::outcomes_from_json_texts("records", texts.iter().cloned())?
                }
            };
            let embeddings = match given {
                Some(tensor) => {
                    check_one_row_per_record(&tensor, &data, &*self.embedder()?)?;
                    tensor
                }
                None => {
                    let texts: Vec<&str> = data.records.iter().map(|r| r.query.as_str()).collect();
                    self.embedder()?.embed(&texts)?
                }
            };
            let mut router = self.inner.write().expect("not poisoned");
            router.add_models(&embeddings, &data, declared_accuracy)
        })
        .map_err(py_err)
    }

    /// Adds `model` without evaluations, on a declared accuracy and cost per query.
    fn add_model_on_prior(&self, model: &str, accuracy: f64, cost: f64) -> PyResult<()> {
        let prior = ModelPrior {
            accuracy,
            cost: Some(cost),
        };
        let mut router = self.inner.write().expect("not poisoned");
        router.add_model_on_prior(model, prior).map_err(py_err)
    }

    fn remove_model(&self, model: &str) -> PyResult<()> {
        let mut router = self.inner.write().expect("not poisoned");
        router.remove_model(model).map_err(py_err)
    }

    /// Recomputes costs at `prices` (model → (input, output) dollars per million tokens);
    /// returns what changed, as JSON.
    fn reprice(&self, prices: BTreeMap<String, (f64, f64)>) -> PyResult<String> {
        let prices = prices
            .into_iter()
            .map(|(model, (input, output))| {
                let price = Price {
                    input_per_mtok: input,
                    output_per_mtok: output,
                };
                (model, price)
            })
            .collect();
        let mut router = self.inner.write().expect("not poisoned");
        let report = router.reprice(&prices).map_err(py_err)?;
        Ok(serde_json::to_string(&report).expect("serialisable"))
    }

    /// The `n` records to evaluate a new model on first (`kroute suggest`), best first, as
    /// their JSON texts: from the records given, or the router's training data.
    #[pyo3(signature = (n, path, json, embeddings=None))]
    fn suggest(
        &self,
        py: Python<'_>,
        n: usize,
        path: Option<PathBuf>,
        json: Option<Vec<String>>,
        embeddings: Option<PyReadonlyArray2<'_, f32>>,
    ) -> PyResult<Vec<String>> {
        let source = match (path, json) {
            (None, None) => RecordsSource::Path(PathBuf::from(&self.router().training.data)),
            (path, json) => RecordsSource::new(path, json)?,
        };
        let given = embeddings
            .map(|a| to_tensor(&a, self.router().device()))
            .transpose()?;
        py.detach(|| -> kroute::Result<Vec<String>> {
            let settings = RecordsSettings {
                missing_cost: MissingCost::Zero,
                ..RecordsSettings::default()
            };
            let data = source.read(&settings)?;
            let candidates = data.suggestion_candidates();
            let embeddings = match given {
                Some(tensor) => {
                    check_one_row_per_record(&tensor, &data, &*self.embedder()?)?;
                    let index: Vec<u32> = candidates.iter().map(|&i| i as u32).collect();
                    let index = Tensor::from_vec(index, candidates.len(), tensor.device())?;
                    tensor.index_select(&index, 0)?
                }
                None => {
                    let texts: Vec<&str> = candidates
                        .iter()
                        .map(|&i| data.records[i].query.as_str())
                        .collect();
                    self.embedder()?.embed(&texts)?
                }
            };
            let rows: Vec<usize> = self
                .router()
                .suggest(&embeddings, n)?
                .into_iter()
                .map(|i| candidates[i])
                .collect();
            match &source {
                RecordsSource::Path(_) => data.source_lines(&rows),
                RecordsSource::Json(texts) => Ok(rows.iter().map(|&i| texts[i].clone()).collect()),
            }
        })
        .map_err(py_err)
    }

    #[getter]
    fn models(&self) -> Vec<String> {
        self.router().models.clone()
    }

    /// Everything router.json holds but the clusters and learned cells (JSON).
    fn info(&self) -> String {
        let router = self.router();
        serde_json::json!({
            "models": router.models,
            "clusters": router.clusters_per_member(),
            "bag": router.bag,
            "embedding": router.embedding,
            "routing": router.defaults,
            "training": router.training,
            "pool": router.pool_changes(),
            "prior_only": router.prior_only_models(),
            "feedback": {
                "observations": router.learned().observations,
                "sources": router.learned().sources,
            },
        })
        .to_string()
    }
}

/// `kroute eval`: report.json's content as JSON, and the report directory when `output` is
/// given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvalSpec {
    records: RecordsSettings,
    kmeans: KMeansSettings,
    routing: RoutingSettings,
    alphas: Vec<f64>,
    seeds: Vec<u64>,
    output: Option<PathBuf>,
    plots: bool,
}

#[pyfunction]
#[pyo3(signature = (path, json, settings, spec, embeddings=None))]
fn evaluate(
    py: Python<'_>,
    path: Option<PathBuf>,
    json: Option<Vec<String>>,
    settings: &str,
    spec: &str,
    embeddings: Option<PyReadonlyArray2<'_, f32>>,
) -> PyResult<String> {
    let source = RecordsSource::new(path, json)?;
    let settings: EvalSpec = from_json("setting", settings)?;
    let spec: EmbedderSettings = from_json("embedder option", spec)?;
    let device = spec.device.open().map_err(py_err)?;
    let given = embeddings.map(|a| to_tensor(&a, &device)).transpose()?;
    py.detach(|| -> kroute::Result<String> {
        let data = source.read(&settings.records)?;
        let seed = *settings
            .seeds
            .first()
            .ok_or_else(|| Error::Invalid("seeds: give at least one".into()))?;
        let split = settings.records.split_options(seed);
        let config = EvalConfig {
            alphas: alpha_grid(&settings.alphas),
            seeds: settings.seeds.clone(),
            kmeans: settings
                .kmeans
                .config(seed, data.split(&split)?.train.len())?,
            bag: settings.kmeans.bag,
            routing: settings.routing.resolve(RouteParams::recommended())?,
            split,
            validation_ratio: None,
        };
        let embedder = spec.load(true)?;
        let embeddings = match given {
            Some(tensor) => {
                check_one_row_per_record(&tensor, &data, &embedder)?;
                tensor
            }
            None => {
                let texts: Vec<&str> = data.records.iter().map(|r| r.query.as_str()).collect();
                embedder.embed(&texts)?
            }
        };
        let evaluation = run_evaluation(
            &data,
            &embeddings,
            &EmbeddingInfo::of(&embedder),
            &config,
            |_| {},
        )?;
        let report = Report::new(evaluation);
        if let Some(dir) = &settings.output {
            report.write(dir, settings.plots)?;
        }
        Ok(serde_json::to_string(&report).expect("serialisable"))
    })
    .map_err(py_err)
}

/// `kroute check --json`.
#[pyfunction]
#[pyo3(signature = (path, json, missing_cost))]
fn check(
    py: Python<'_>,
    path: Option<PathBuf>,
    json: Option<Vec<String>>,
    missing_cost: &str,
) -> PyResult<String> {
    let source = RecordsSource::new(path, json)?;
    py.detach(|| -> kroute::Result<String> {
        let settings = RecordsSettings {
            missing_cost: missing_cost
                .parse()
                .map_err(|e| Error::Invalid(format!("missing_cost {e}")))?,
            ..RecordsSettings::default()
        };
        let summary = source.read(&settings)?.summary();
        Ok(serde_json::to_string(&summary).expect("serialisable"))
    })
    .map_err(py_err)
}

/// `kroute eval`'s area under the accuracy–cost frontier of `(cost, accuracy)` points, costs
/// normalised by `reference_cost`.
#[pyfunction]
fn frontier_area(points: Vec<(f64, f64)>, reference_cost: f64) -> f64 {
    kroute::eval::frontier_area(&points, reference_cost)
}

/// `kroute serve`'s budget pacer: the α to route at for a tenant whose own α is `alpha`,
/// having spent `spent` of `budget` dollars with `elapsed` of the period gone; and whether the
/// budget is spent.
#[pyfunction]
fn pace(budget: f64, alpha: f64, spent: f64, elapsed: f64) -> PyResult<(f64, bool)> {
    if !(budget > 0.0 && budget.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "budget must be a positive number of dollars, got {budget}"
        )));
    }
    let budget = kroute::budget::Budget {
        usd: budget,
        period: std::time::Duration::from_secs(1),
        on_exhausted: kroute::budget::OnExhausted::Cheapest,
    };
    let pace = budget.pace(alpha, spent, elapsed);
    Ok((pace.alpha, pace.exhausted))
}

#[pymodule]
fn _kroute(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Embedder>()?;
    m.add_class::<Router>()?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(frontier_area, m)?)?;
    m.add_function(wrap_pyfunction!(pace, m)?)?;
    m.add("DEFAULT_MODEL", DEFAULT_MODEL)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
