//! A `kroute serve` harness for the integration tests: a router trained on real RouterBench
//! records with the real model, a mock provider, the server in process on a loopback port (or
//! the binary as a child process), and the library's own decisions to compare with.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use candle_core::Device;
use kroute::engine::EngineOptions;
use kroute::records::{MissingCost, RoutingData};
use kroute::router::{RouteParams, Router};
use kroute::serve::{ServeConfig, ServeOptions, Server};
use kroute::{Embedder, EmbedderOptions};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::upstream::MockUpstream;
use super::{bundled_sample, embedder, small_router};

pub const KEY_VAR: &str = "MOCK_PROVIDER_KEY";
pub const KEY: &str = "sk-mock-provider-secret";
pub const RENAMED: (&str, &str) = ("gpt-4-1106-preview", "gpt-4-turbo");

/// Training and held-out queries of the bundled records, and a router trained on the former.
pub struct Fixture {
    pub router: PathBuf,
    pub queries: Vec<String>,
    pub embedder: Embedder,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let data = RoutingData::read(&bundled_sample(&dir, 400, true), MissingCost::Error).unwrap();
        let embedder = embedder(EmbedderOptions::default());
        let train: Vec<usize> = (0..300).collect();
        let router = small_router(&data, &train, &embedder);
        let path = dir.join("router");
        router.save(&path).unwrap();
        let queries = data.records[300..]
            .iter()
            .map(|r| r.query.clone())
            .collect();
        Fixture {
            router: path,
            queries,
            embedder,
        }
    })
}

/// The fixture's router as `Router::load` reads it back (loaded once; cloned per server).
pub fn load_router() -> Router {
    static LOADED: OnceLock<Router> = OnceLock::new();
    LOADED
        .get_or_init(|| Router::load(&fixture().router, &Device::Cpu).unwrap())
        .clone()
}

/// The library's per-model totals for `text` (the reference the server must agree with) and
/// its ranking of the models, best first.
pub fn reference(text: &str, params: &RouteParams) -> (Vec<String>, Vec<f32>, Vec<String>) {
    let router = load_router();
    let routed = router
        .route(&fixture().embedder.embed(&[text]).unwrap(), params)
        .unwrap();
    let ranking = routed
        .ranking(0)
        .into_iter()
        .map(|m| router.models[m].clone())
        .collect();
    (router.models, routed.totals(0).to_vec(), ranking)
}

pub fn ranking(text: &str, params: &RouteParams) -> Vec<String> {
    reference(text, params).2
}

pub fn defaults() -> RouteParams {
    load_router().defaults
}

pub fn alpha(alpha: f64) -> RouteParams {
    let mut params = defaults();
    params.scoring = params.scoring.at_alpha(alpha);
    params
}

pub struct Harness {
    pub base: String,
    pub http: reqwest::Client,
    pub mock: MockUpstream,
    stop: Option<oneshot::Sender<()>>,
    stopped: tokio::task::JoinHandle<()>,
}

/// The default config: every model on the mock with a key, one model renamed and priced.
pub fn config_text(mock: &str, extra: &str) -> String {
    format!(
        r#"
[upstream.default]
base_url = "{mock}"
api_key_env = "{KEY_VAR}"

[upstream."{}"]
model = "{}"
price = {{ input_per_mtok = 10.0, output_per_mtok = 30.0 }}
{extra}
"#,
        RENAMED.0, RENAMED.1
    )
}

/// The client key of a tenant whose `api_keys_env` is `<NAME>_TENANT_KEYS`.
pub fn tenant_key(name: &str) -> String {
    format!("sk-tenant-{}", name.to_lowercase())
}

pub async fn start(extra_config: &str, options: ServeOptions, engine: EngineOptions) -> Harness {
    let mock = MockUpstream::start().await;
    start_with(mock, extra_config, options, engine).await
}

pub async fn start_with(
    mock: MockUpstream,
    extra_config: &str,
    options: ServeOptions,
    engine: EngineOptions,
) -> Harness {
    start_serving(load_router(), mock, extra_config, options, engine).await
}

/// [`start_with`] serving `router` (one of the fixture router's variants).
pub async fn start_serving(
    router: Router,
    mock: MockUpstream,
    extra_config: &str,
    options: ServeOptions,
    engine: EngineOptions,
) -> Harness {
    let config = ServeConfig::parse(
        &config_text(&mock.base_url, extra_config),
        "kroute.toml".as_ref(),
        &router.models,
        router.defaults,
        |var| match var {
            KEY_VAR => Some(KEY.to_string()),
            // `[tenants.*]` blocks of the tests name their keys' variables so.
            _ => var.strip_suffix("_TENANT_KEYS").map(tenant_key),
        },
    )
    .unwrap();
    let embedder = embedder(EmbedderOptions::default());
    let server = Server::start(embedder, router, engine, config, options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stop_signal) = oneshot::channel::<()>();
    let stopped = tokio::spawn(async move {
        server
            .run(listener, async {
                let _ = stop_signal.await;
            })
            .await
            .unwrap()
    });
    let http = reqwest::Client::new();
    let harness = Harness {
        base,
        http,
        mock,
        stop: Some(stop),
        stopped,
    };
    for _ in 0..600 {
        if harness.get("/health").await.status() == 200 {
            return harness;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server never became ready");
}

impl Harness {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A request with `key` as its bearer key and `headers`.
    pub async fn post_as(
        &self,
        key: Option<&str>,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    pub async fn chat(&self, model: &str, text: &str) -> reqwest::Response {
        self.post("/v1/chat/completions", &chat_body(model, text, false))
            .await
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    pub async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), &mut self.stopped)
            .await
            .expect("graceful shutdown finishes")
            .unwrap();
    }
}

pub fn chat_body(model: &str, text: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": text},
        ],
    })
}

pub fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// The upstream name a router model is called by.
pub fn upstream_name(model: &str) -> &str {
    if model == RENAMED.0 {
        RENAMED.1
    } else {
        model
    }
}

/// Asserts an OpenAI-shaped error with this status; returns its message.
pub async fn expect_error(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert!(error["type"].is_string(), "{body}");
    assert!(
        error.get("code").is_some() && error.get("param").is_some(),
        "{body}"
    );
    error["message"].as_str().unwrap().to_string()
}

/// A query whose best model differs between α = 1 and α = 0.
pub fn query_with_a_trade_off() -> &'static str {
    fixture()
        .queries
        .iter()
        .find(|q| ranking(q, &alpha(1.0))[0] != ranking(q, &alpha(0.0))[0])
        .expect("some held-out query trades accuracy for cost")
}

/// `kroute serve` as a child process, once it listens and is ready; its stderr is collected.
pub struct ServeProcess {
    pub child: Child,
    pub base: String,
    lines: std::sync::mpsc::Receiver<String>,
    log: Vec<String>,
}

impl ServeProcess {
    /// Starts `kroute serve ARGS --port 0` with `env` and waits until `/health` says ready.
    pub async fn start(args: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        let mut command = super::kroute_bin();
        command
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let (lines_tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let _ = lines_tx.send(line.unwrap());
            }
        });
        let mut log = Vec::new();
        let base = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("kroute serve never listened:\n{}", log.join("\n")));
            log.push(line.clone());
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        let process = ServeProcess {
            child,
            base,
            lines,
            log,
        };
        let http = reqwest::Client::new();
        for _ in 0..1200 {
            let health = http.get(format!("{}/health", process.base)).send().await;
            if health.is_ok_and(|r| r.status() == 200) {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("kroute serve never became ready");
    }

    /// Everything it wrote to stderr so far.
    pub fn log(&mut self) -> String {
        self.log.extend(self.lines.try_iter());
        self.log.join("\n")
    }

    /// Sends `signal` (e.g. "-HUP", "-KILL", "-TERM").
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
