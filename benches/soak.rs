//! Soak of `kroute serve` under faults, on loopback only: the kroute binary in its own process
//! with a state directory, in front of an upstream (in this process) that injects a fault into
//! about half of its answers, and `--clients` concurrent clients for `--minutes`. Then `kill -9`
//! in the middle of the traffic and a restart on the same state directory.
//!
//! ```text
//! kroute train data/routerbench-3k.jsonl.gz -o router
//! cargo bench --bench soak -- router                  # 200 clients, 10 minutes
//! cargo bench --bench soak -- router --clients 50 --minutes 1
//! ```
//!
//! Upstream faults, drawn per request from a seeded generator: latency spikes, 500, 429,
//! connection resets before and after the headers, streams that break mid-way, bodies that
//! trickle, invalid JSON, and answers that hang past the configured timeout. Client traffic:
//! chat (plain and streamed), `/v1/route`, `/v1/embeddings`, outcomes posted to
//! `/v1/feedback` for earlier decisions, oversized, malformed and slowly uploaded bodies, and
//! a reload every 30 s. It passes when every request ends before its deadline with a success
//! or the error documented for what happened to it (never a 500), every acknowledged outcome
//! is in the restarted server's state, and resident memory and open files stay flat. Prints
//! a report per endpoint, then one JSON line; exits 1 when a check fails.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::{bundled_queries, open_files, percentile, rss_mib, Server};

/// Upstream timeout in kroute.toml; an answer that hangs outlives it.
const UPSTREAM_TIMEOUT_S: u64 = 2;
/// No request may take longer: three tries at the timeout, plus queueing.
const DEADLINE: Duration = Duration::from_secs(20);
const ADMIN_KEY: &str = "soak-admin-key";

struct Options {
    router: String,
    clients: usize,
    minutes: f64,
    seed: u64,
}

fn parse_options() -> Options {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
    };
    Options {
        router: args
            .first()
            .filter(|a| !a.starts_with("--"))
            .cloned()
            .unwrap_or_else(|| "router".into()),
        clients: value("--clients").map_or(200, |v| v.parse().unwrap()),
        minutes: value("--minutes").map_or(10.0, |v| v.parse().unwrap()),
        seed: value("--seed").map_or(1, |v| v.parse().unwrap()),
    }
}

/// What the upstream does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fault {
    None,
    LatencySpike,
    Status500,
    Status429,
    ResetBeforeHeaders,
    ResetAfterHeaders,
    StreamBreaks,
    Trickle,
    InvalidJson,
    Hang,
}

impl Fault {
    fn draw(rng: &mut StdRng) -> Fault {
        const TABLE: [(Fault, u32); 10] = [
            (Fault::None, 50),
            (Fault::LatencySpike, 8),
            (Fault::Status500, 8),
            (Fault::Status429, 8),
            (Fault::ResetBeforeHeaders, 5),
            (Fault::ResetAfterHeaders, 5),
            (Fault::StreamBreaks, 5),
            (Fault::Trickle, 5),
            (Fault::InvalidJson, 4),
            (Fault::Hang, 2),
        ];
        let mut pick = rng.random_range(0..100);
        for (fault, weight) in TABLE {
            if pick < weight {
                return fault;
            }
            pick -= weight;
        }
        Fault::None
    }
}

/// An HTTP/1.1 upstream written on raw sockets, so that it can fail the ways real ones do.
async fn faulty_upstream(
    listener: TcpListener,
    seed: u64,
    faults: Arc<Mutex<BTreeMap<Fault, u64>>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let fault = Fault::draw(&mut rng);
        *faults.lock().unwrap().entry(fault).or_default() += 1;
        let delay = Duration::from_millis(rng.random_range(200..1500));
        tokio::spawn(async move {
            let _ = answer(socket, fault, delay).await;
        });
    }
}

async fn answer(mut socket: TcpStream, fault: Fault, delay: Duration) -> std::io::Result<()> {
    let request = read_request(&mut socket).await?;
    let model = request["model"].as_str().unwrap_or("model").to_string();
    let stream = request["stream"].as_bool().unwrap_or(false);
    let completion = json!({
        "id": "chatcmpl-soak", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    })
    .to_string();
    let chunk = |i: usize| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-soak", "object": "chat.completion.chunk", "model": model,
                   "choices": [{"index": 0, "delta": {"content": format!("part {i} ")}}]})
        )
    };
    let json_head = |status: &str, length: usize| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\
             Connection: close\r\n\r\n"
        )
    };
    let reset = |socket: TcpStream| {
        let _ = socket.set_zero_linger();
        drop(socket);
    };
    match fault {
        Fault::None | Fault::LatencySpike | Fault::Hang => {
            if fault == Fault::LatencySpike {
                tokio::time::sleep(delay).await;
            }
            if fault == Fault::Hang {
                tokio::time::sleep(Duration::from_secs(UPSTREAM_TIMEOUT_S * 3)).await;
            }
            match stream {
                true => {
                    socket
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
                        .await?;
                    for i in 0..3 {
                        socket.write_all(chunk(i).as_bytes()).await?;
                    }
                    socket.write_all(b"data: [DONE]\n\n").await?;
                }
                false => {
                    socket
                        .write_all(json_head("200 OK", completion.len()).as_bytes())
                        .await?;
                    socket.write_all(completion.as_bytes()).await?;
                }
            }
        }
        Fault::Status500 | Fault::Status429 => {
            let (status, kind) = match fault {
                Fault::Status500 => ("500 Internal Server Error", "server_error"),
                _ => ("429 Too Many Requests", "rate_limit_error"),
            };
            let body = json!({"error": {"message": "injected", "type": kind}}).to_string();
            socket
                .write_all(json_head(status, body.len()).as_bytes())
                .await?;
            socket.write_all(body.as_bytes()).await?;
        }
        Fault::ResetBeforeHeaders => reset(socket),
        Fault::ResetAfterHeaders => {
            socket
                .write_all(json_head("200 OK", completion.len()).as_bytes())
                .await?;
            socket.write_all(&completion.as_bytes()[..10]).await?;
            reset(socket);
        }
        Fault::StreamBreaks => {
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
                .await?;
            socket.write_all(chunk(0).as_bytes()).await?;
            reset(socket);
        }
        Fault::Trickle => {
            socket
                .write_all(json_head("200 OK", completion.len()).as_bytes())
                .await?;
            for byte in completion.as_bytes() {
                socket.write_all(&[*byte]).await?;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        }
        Fault::InvalidJson => {
            let body = b"{\"id\": \"chatcmpl-soak\", \"choices\": [";
            socket
                .write_all(json_head("200 OK", body.len()).as_bytes())
                .await?;
            socket.write_all(body).await?;
        }
    }
    Ok(())
}

/// Reads one request's head and its `Content-Length` body; returns the body as JSON.
async fn read_request(socket: &mut TcpStream) -> std::io::Result<Value> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Value::Null);
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Ok(serde_json::from_slice(&buffer[head_end..]).unwrap_or(Value::Null))
}

/// `kroute serve` with a state directory and an admin key, in front of `upstream`.
async fn start_server(router: &str, dir: &std::path::Path, upstream: &str) -> Server {
    let config = format!(
        "[upstream.default]\nbase_url = \"{upstream}\"\ntimeout_s = {UPSTREAM_TIMEOUT_S}\n\
         price = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }}\n"
    );
    let state = dir.join("state");
    let args = [
        "--max-body-bytes",
        "65536",
        "--admin-key",
        ADMIN_KEY,
        "--snapshot-every",
        "20s",
        "--state",
        state.to_str().unwrap(),
    ];
    common::start_server(router, dir, &config, &args).await
}

/// Outcomes per endpoint: statuses, latencies, and what broke a check.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<String, BTreeMap<String, u64>>,
    latencies_ms: HashMap<String, Vec<f64>>,
    violations: Vec<String>,
    /// Outcomes the server acknowledged.
    acked: u64,
}

impl Tally {
    fn record(&mut self, endpoint: &str, status: &str, latency: Duration, allowed: bool) {
        *self
            .statuses
            .entry(endpoint.into())
            .or_default()
            .entry(status.into())
            .or_default() += 1;
        self.latencies_ms
            .entry(endpoint.into())
            .or_default()
            .push(latency.as_secs_f64() * 1e3);
        if !allowed && self.violations.len() < 50 {
            self.violations.push(format!("{endpoint}: {status}"));
        }
    }
}

/// The statuses documented for each kind of request under upstream faults (README, "Errors").
fn allowed(endpoint: &str, status: u16) -> bool {
    match endpoint {
        "chat" | "chat-stream" => matches!(status, 200 | 429 | 502 | 504),
        "route" | "embeddings" | "feedback" => matches!(status, 200 | 429),
        "oversized" => status == 413,
        "malformed" => status == 400,
        "slow-upload" => matches!(status, 200 | 429),
        "reload" => status == 200,
        _ => false,
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    queries: Arc<Vec<String>>,
    tally: Arc<Mutex<Tally>>,
    killed: Arc<AtomicBool>,
    ids: Vec<String>,
}

impl Client {
    async fn run(mut self, stop: Arc<AtomicBool>, seed: u64, counter: Arc<AtomicU64>) {
        let mut rng = StdRng::seed_from_u64(seed);
        while !stop.load(Ordering::SeqCst) {
            let query = self.queries[rng.random_range(0..self.queries.len())].clone();
            let pick = rng.random_range(0..100);
            counter.fetch_add(1, Ordering::Relaxed);
            let (endpoint, request) = match pick {
                0..35 => ("chat", self.chat(&query, false)),
                35..50 => ("chat-stream", self.chat(&query, true)),
                50..70 => ("route", self.post("/v1/route", json!({"input": query}))),
                70..80 => (
                    "embeddings",
                    self.post("/v1/embeddings", json!({"input": [query]})),
                ),
                80..95 => match self.ids.pop() {
                    Some(id) => {
                        let score = rng.random_range(0..=2) as f64 / 2.0;
                        let body = json!({"decision_id": id, "score": score});
                        ("feedback", self.post("/v1/feedback", body))
                    }
                    None => ("route", self.post("/v1/route", json!({"input": query}))),
                },
                95..97 => {
                    let body = json!({"input": "x".repeat(100_000)});
                    ("oversized", self.post("/v1/route", body))
                }
                97..99 => (
                    "malformed",
                    self.http
                        .post(format!("{}/v1/route", self.base))
                        .header("content-type", "application/json")
                        .body("{\"input\": [1, 2"),
                ),
                _ => ("slow-upload", self.slow_upload(&query)),
            };
            self.send(endpoint, request).await;
        }
    }

    fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).json(&body)
    }

    fn chat(&self, query: &str, stream: bool) -> reqwest::RequestBuilder {
        let body = json!({"model": "kroute", "stream": stream,
                          "messages": [{"role": "user", "content": query}]});
        self.post("/v1/chat/completions", body)
    }

    /// A body sent a piece at a time over a second.
    fn slow_upload(&self, query: &str) -> reqwest::RequestBuilder {
        let body = json!({"input": query}).to_string().into_bytes();
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(8).map(|c| Ok(c.to_vec())).collect();
        let pace = Duration::from_millis(1000 / pieces.len().max(1) as u64);
        let stream = futures_util::stream::iter(pieces).then(move |piece| async move {
            tokio::time::sleep(pace).await;
            piece
        });
        self.http
            .post(format!("{}/v1/route", self.base))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
    }

    async fn send(&mut self, endpoint: &str, request: reqwest::RequestBuilder) {
        let started = Instant::now();
        let outcome = tokio::time::timeout(DEADLINE, async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let id = response
                .headers()
                .get("x-kroute-decision-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response.bytes().await;
            Ok::<_, reqwest::Error>((status, id, body))
        })
        .await;
        let latency = started.elapsed();
        let mut tally = self.tally.lock().unwrap();
        match outcome {
            Err(_) => tally.record(endpoint, "hung past its deadline", latency, false),
            // The server was killed on purpose: what was in flight is cut.
            Ok(Err(_)) if self.killed.load(Ordering::SeqCst) => {}
            Ok(Err(e)) => {
                // What reqwest says names only the URL; the cause is further down its chain.
                let cause = format!("transport error: {:#}", anyhow::Error::new(e));
                tally.record(endpoint, &cause, latency, false)
            }
            Ok(Ok((status, id, body))) => {
                let ok = allowed(endpoint, status);
                // A stream that broke after it began ends with an error event (README).
                let broke = endpoint == "chat-stream"
                    && body.as_ref().is_ok_and(|b| {
                        b.windows(b"stream_broken".len())
                            .any(|w| w == b"stream_broken")
                    });
                let label = match broke {
                    true => format!("{status} stream_broken"),
                    false => status.to_string(),
                };
                tally.record(endpoint, &label, latency, ok);
                if status == 200 {
                    let body: Option<Value> =
                        body.ok().and_then(|b| serde_json::from_slice(&b).ok());
                    // /v1/route gives its decision id twice (header and body): keep it once,
                    // or its second outcome is a duplicate that the server rightly ignores.
                    if let Some(id) = id {
                        self.ids.push(id);
                    }
                    let duplicate = body.as_ref().is_some_and(|b| b["duplicate"] == true);
                    if endpoint == "feedback" && !duplicate {
                        tally.acked += 1;
                    }
                }
            }
        }
        // The newest 64 ids, so that outcomes are posted for decisions still remembered.
        let stale = self.ids.len().saturating_sub(64);
        self.ids.drain(..stale);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = parse_options();
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/v1", listener.local_addr().unwrap());
    let faults = Arc::new(Mutex::new(BTreeMap::new()));
    tokio::spawn(faulty_upstream(listener, options.seed, faults.clone()));

    let mut server = start_server(&options.router, dir.path(), &upstream).await;
    eprintln!(
        "kroute serve ready in {:.1} s; {} clients for {} minutes",
        server.started.elapsed().as_secs_f64(),
        options.clients,
        options.minutes
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let queries = Arc::new(bundled_queries(true, 24));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.clients)
        .build()
        .unwrap();
    let clients: Vec<_> = (0..options.clients)
        .map(|i| {
            let client = Client {
                http: http.clone(),
                base: server.base.clone(),
                queries: queries.clone(),
                tally: tally.clone(),
                killed: killed.clone(),
                ids: Vec::new(),
            };
            tokio::spawn(client.run(stop.clone(), options.seed * 1000 + i as u64, sent.clone()))
        })
        .collect();

    // Reloads every 30 s, memory and open files every 10 s.
    let pid = server.child.id();
    let total = Duration::from_secs_f64(options.minutes * 60.0);
    let start = Instant::now();
    let mut samples: Vec<(f64, f64, usize)> = Vec::new();
    let mut next_reload = Duration::from_secs(30);
    while start.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(10).min(total.saturating_sub(start.elapsed())))
            .await;
        let at = start.elapsed();
        samples.push((at.as_secs_f64(), rss_mib(pid), open_files(pid)));
        if at >= next_reload {
            next_reload += Duration::from_secs(30);
            let began = Instant::now();
            let status = http
                .post(format!("{}/admin/reload", server.base))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .map_or(0, |r| r.status().as_u16());
            let ok = allowed("reload", status);
            tally
                .lock()
                .unwrap()
                .record("reload", &status.to_string(), began.elapsed(), ok);
        }
    }

    // kill -9 with the traffic still running, then a restart on the same state.
    killed.store(true, Ordering::SeqCst);
    let _ = server.child.kill();
    let _ = server.child.wait();
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let acked = tally.lock().unwrap().acked;
    let restarted = start_server(&options.router, dir.path(), &upstream).await;
    let state: Value = http
        .get(format!("{}/admin/state", restarted.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let learned = state["observations"].as_u64().unwrap_or(0);
    server = restarted;

    let tally = tally.lock().unwrap();
    let mut failures: Vec<String> = tally.violations.clone();
    if learned < acked {
        failures.push(format!(
            "{learned} outcomes held after the restart, {acked} acknowledged"
        ));
    }
    // One sample moves by up to 10 % from the next with the requests in flight: compare the
    // means of the minute that ends at minute 2 and of the last minute.
    let early_minute = 2.0_f64.min(options.minutes / 5.0);
    let window_s = 60.0_f64.min(early_minute * 60.0);
    let rss_mean = |end_s: f64| {
        let inside: Vec<f64> = samples
            .iter()
            .filter(|s| s.0 > end_s - window_s - 0.5 && s.0 <= end_s + 0.5)
            .map(|s| s.1)
            .collect();
        match inside.len() {
            // A run too short for a sample in the window: the sample nearest its end.
            0 => samples
                .iter()
                .min_by(|a, b| (a.0 - end_s).abs().total_cmp(&(b.0 - end_s).abs()))
                .map_or(f64::NAN, |s| s.1),
            n => inside.iter().sum::<f64>() / n as f64,
        }
    };
    let (rss_early, rss_late) = (
        rss_mean(early_minute * 60.0),
        rss_mean(options.minutes * 60.0),
    );
    if rss_late > rss_early * 1.10 {
        failures.push(format!(
            "RSS grew from {rss_early:.0} MiB to {rss_late:.0} MiB"
        ));
    }
    let files: Vec<usize> = samples.iter().map(|s| s.2).collect();
    let (files_min, files_max) = (
        files.iter().copied().min().unwrap_or(0),
        files.iter().copied().max().unwrap_or(0),
    );
    // Open sockets follow the clients in flight; the bound is the clients plus the server's own.
    if files_max > options.clients * 3 + 64 {
        failures.push(format!("open files reached {files_max}"));
    }

    println!("| endpoint | requests | statuses | p50 ms | p99 ms |");
    println!("|---|---:|---|---:|---:|");
    let mut endpoints = serde_json::Map::new();
    for (endpoint, statuses) in &tally.statuses {
        let mut latencies = tally.latencies_ms[endpoint].clone();
        let count: u64 = statuses.values().sum();
        latencies.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        let listed: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        println!(
            "| {endpoint} | {count} | {} | {p50:.1} | {p99:.1} |",
            listed.join(", ")
        );
        endpoints.insert(
            endpoint.clone(),
            json!({"requests": count, "statuses": statuses, "p50_ms": p50, "p99_ms": p99}),
        );
    }
    let faults = faults.lock().unwrap().clone();
    let faults: BTreeMap<String, u64> =
        faults.iter().map(|(f, n)| (format!("{f:?}"), *n)).collect();
    println!("upstream answers by fault: {faults:?}");
    println!(
        "RSS {rss_early:.0} MiB in the minute to {early_minute:.1}, {rss_late:.0} MiB in the last; \
         open files {files_min}..{files_max}"
    );
    println!(
        "after kill -9: {acked} outcomes acknowledged, {learned} held; ready {:.2} s after listening",
        server.ready_after.as_secs_f64()
    );
    match failures.is_empty() {
        true => println!("PASS"),
        false => println!("FAIL:\n  {}", failures.join("\n  ")),
    }
    println!(
        "{}",
        json!({
            "clients": options.clients, "minutes": options.minutes,
            "requests": sent.load(Ordering::Relaxed), "endpoints": endpoints,
            "upstream_faults": faults,
            "rss_mib": samples.iter().map(|s| json!([s.0, s.1])).collect::<Vec<_>>(),
            "open_files": files, "acknowledged": acked, "held_after_restart": learned,
            "ready_after_listening_s": server.ready_after.as_secs_f64(),
            "failures": failures,
        })
    );
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
