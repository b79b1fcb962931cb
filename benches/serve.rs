//! Load test of `kroute serve` on loopback: the kroute binary in its own process, a mock
//! provider that answers at once (in this process), and a closed-loop client at several
//! concurrencies. Because the provider answers instantly, a request's latency through kroute is
//! kroute's overhead (tokenize, queue, embed, route, proxy); the same load sent straight to the
//! mock gives the loopback baseline.
//!
//! ```text
//! kroute train data/routerbench-3k.jsonl.gz -o router
//! cargo bench --bench serve -- router                       # concurrency 1, 16, 64
//! cargo bench --bench serve -- router --soak 600            # RSS over 10 min at concurrency 64
//! cargo bench --bench serve -- router --feedback             # routing under a feedback stream
//! cargo bench --bench serve -- router --decision-log         # the cost of the decision log
//! cargo bench --bench serve -- router --latency              # a slow provider under an SLO
//! ```
//! `--latency` makes the model kroute picks most often answer 300 ms late and sends 400
//! requests at concurrency 8, three times: without a limit, with `x-kroute-max-ttft-ms: 150`,
//! and with the limit once the model has recovered and its slow answers have aged out of the
//! server's `--latency-window 3s`; it reports the slow model's share and the p50 of each.
//! `--decision-log` runs two servers, one with `--decision-log DIR --log-queries` (a file every
//! 5000 rows or 5 s, so that writing files is part of what is measured), and
//! measures them in turn at each concurrency (twice each, alternating), reporting p50 and
//! throughput of both.
//! `--feedback` runs the server with a state directory (every outcome fsynced before its
//! answer) and measures, at concurrency 16: chat alone; chat while 8 clients post an outcome
//! for every answer's decision id; and outcomes alone at concurrency 64 (events/s, p50, p99);
//! with the server's CPU time per chat request and per outcome, and the cores the server and
//! this client kept busy.
//! Options: `--seconds S` per level (default 20), `--words N` (queries cut to N words, default
//! 12: one short question), `--concurrency 1,16,64`, `--dtype f32|int8` (the server's, default
//! f32). Prints a table, the encoder's batched
//! ceiling (64 queries per embeddings request), then one JSON line.

mod common;
#[path = "../tests/common/upstream.rs"]
#[allow(dead_code)]
mod upstream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bundled_queries, cpu_seconds, percentile, rss_mib, start_server, Server};
use serde_json::{json, Value};
use upstream::MockUpstream;

struct Options {
    router: String,
    seconds: f64,
    words: usize,
    concurrency: Vec<usize>,
    soak: Option<f64>,
    dtype: String,
    feedback: bool,
    decision_log: bool,
    latency: bool,
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
        seconds: value("--seconds").map_or(20.0, |v| v.parse().unwrap()),
        words: value("--words").map_or(12, |v| v.parse().unwrap()),
        concurrency: value("--concurrency").map_or(vec![1, 16, 64], |v| {
            v.split(',').map(|c| c.parse().unwrap()).collect()
        }),
        soak: value("--soak").map(|v| v.parse().unwrap()),
        dtype: value("--dtype").unwrap_or_else(|| "f32".into()),
        feedback: args.iter().any(|a| a == "--feedback"),
        decision_log: args.iter().any(|a| a == "--decision-log"),
        latency: args.iter().any(|a| a == "--latency"),
    }
}

/// Held-out RouterBench queries, each cut to its first `words` words.
/// `n` routed chat requests at concurrency 8 with `headers`: the model and latency of each.
async fn models_and_latencies(
    url: &str,
    queries: &[String],
    n: usize,
    headers: &[(&str, &str)],
) -> Vec<(String, f64)> {
    use futures_util::StreamExt;
    let http = reqwest::Client::new();
    futures_util::stream::iter(queries.iter().cycle().take(n))
        .map(|query| {
            let mut request = http.post(url).json(&json!({"model": "kroute",
                "messages": [{"role": "user", "content": query}]}));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            async move {
                let started = Instant::now();
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                let model = response.headers()["x-kroute-model"]
                    .to_str()
                    .unwrap()
                    .to_string();
                response.bytes().await.unwrap();
                (model, started.elapsed().as_secs_f64())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// The slow model's share of traffic and the p50 without a limit, under one, and recovered.
async fn latency_phases(url: &str, mock: &MockUpstream, queries: &[String]) -> Value {
    let warm = models_and_latencies(url, queries, 200, &[]).await;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    warm.iter()
        .for_each(|(m, _)| *counts.entry(m).or_default() += 1);
    let slow = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .unwrap()
        .0
        .to_string();
    let limit = [("x-kroute-max-ttft-ms", "150")];
    let mut phases = Vec::new();
    let mut phase = |name: &str, answers: Vec<(String, f64)>| {
        let share =
            answers.iter().filter(|(m, _)| *m == slow).count() as f64 / answers.len() as f64;
        let mut times: Vec<f64> = answers.iter().map(|(_, t)| *t).collect();
        times.sort_by(f64::total_cmp);
        let p50 = percentile(&times, 0.5) * 1e3;
        println!(
            "{name:<28} {slow} share {:>5.1} %, p50 {p50:>7.1} ms",
            share * 100.0
        );
        phases.push(json!({"phase": name, "slow_share": share, "p50_ms": p50}));
    };
    mock.set(&slow, upstream::Behavior::Stall(Duration::from_millis(300)));
    phase(
        "slow, no limit",
        models_and_latencies(url, queries, 400, &[]).await,
    );
    phase(
        "slow, max_ttft_ms 150",
        models_and_latencies(url, queries, 400, &limit).await,
    );
    mock.set(&slow, upstream::Behavior::Answer);
    tokio::time::sleep(Duration::from_secs(4)).await;
    phase(
        "recovered, max_ttft_ms 150",
        models_and_latencies(url, queries, 400, &limit).await,
    );
    json!({"slow_model": slow, "warm_share": counts[slow.as_str()] as f64 / 200.0, "phases": phases})
}

/// Latencies (seconds) of every request finished during `seconds` of closed-loop load; each
/// answer's decision id goes to `decisions` when given.
async fn load(
    url: &str,
    queries: &[String],
    concurrency: usize,
    seconds: f64,
    decisions: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Vec<f64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (http, url, stop) = (http.clone(), url.to_string(), stop.clone());
            let queries = queries.to_vec();
            let decisions = decisions.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = worker;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"model": "kroute",
                        "messages": [{"role": "user", "content": queries[i % queries.len()]}]});
                    let started = Instant::now();
                    let response = http.post(&url).json(&body).send().await.unwrap();
                    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
                    if let (Some(decisions), Some(id)) =
                        (&decisions, response.headers().get("x-kroute-decision-id"))
                    {
                        let _ = decisions.send(id.to_str().unwrap().to_string());
                    }
                    response.bytes().await.unwrap();
                    latencies.push(started.elapsed().as_secs_f64());
                    i += concurrency;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap());
    }
    all
}

struct Level {
    requests: usize,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Level {
    fn of(mut latencies: Vec<f64>, seconds: f64) -> Level {
        latencies.sort_by(f64::total_cmp);
        Level {
            requests: latencies.len(),
            per_s: latencies.len() as f64 / seconds,
            p50_ms: percentile(&latencies, 0.5) * 1e3,
            p99_ms: percentile(&latencies, 0.99) * 1e3,
        }
    }

    fn json(&self) -> Value {
        json!({"requests": self.requests, "per_s": self.per_s, "p50_ms": self.p50_ms,
               "p99_ms": self.p99_ms})
    }
}

/// Load for up to 2 s, unmeasured: warms connections and caches.
async fn warm_up(url: &str, queries: &[String], concurrency: usize, seconds: f64) {
    load(url, queries, concurrency, seconds.min(2.0), None).await;
}

async fn measure(url: &str, queries: &[String], concurrency: usize, seconds: f64) -> Level {
    warm_up(url, queries, concurrency, seconds).await;
    Level::of(
        load(url, queries, concurrency, seconds, None).await,
        seconds,
    )
}

/// Posts an outcome for every decision id that arrives, from `workers` clients, until the ids
/// stop coming; returns each post's latency.
async fn post_outcomes(
    base: &str,
    decisions: tokio::sync::mpsc::UnboundedReceiver<String>,
    workers: usize,
) -> Vec<f64> {
    let decisions = Arc::new(tokio::sync::Mutex::new(decisions));
    let http = reqwest::Client::new();
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let (http, url, decisions) = (
                http.clone(),
                format!("{base}/v1/feedback"),
                decisions.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let Some(id) = decisions.lock().await.recv().await else {
                        return latencies;
                    };
                    let body = json!({"decision_id": id, "score": (worker % 2) as f64});
                    let started = Instant::now();
                    let response = http.post(&url).json(&body).send().await.unwrap();
                    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
                    latencies.push(started.elapsed().as_secs_f64());
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

/// CPU seconds used so far by the server and by this client (whose load shares the cores).
fn cpu_use(server: &Server) -> [f64; 2] {
    [
        cpu_seconds(&server.child.id().to_string()),
        cpu_seconds("self"),
    ]
}

/// Routing throughput without and with a concurrent stream of outcomes, and outcomes alone.
async fn feedback_levels(server: &Server, queries: &[String], seconds: f64) -> Value {
    let chat = format!("{}/v1/chat/completions", server.base);
    warm_up(&chat, queries, 16, seconds).await;
    let before = cpu_use(server);
    let alone = Level::of(load(&chat, queries, 16, seconds, None).await, seconds);
    let after_alone = cpu_use(server);
    let (ids, decisions) = tokio::sync::mpsc::unbounded_channel();
    let posting = tokio::spawn({
        let base = server.base.clone();
        async move { post_outcomes(&base, decisions, 8).await }
    });
    let with_feedback = Level::of(load(&chat, queries, 16, seconds, Some(ids)).await, seconds);
    let started = Instant::now();
    let outcomes = posting.await.unwrap();
    let stream = Level::of(outcomes, seconds + started.elapsed().as_secs_f64());
    let after_both = cpu_use(server);
    // Server CPU per chat request alone, and what each outcome added to it alongside chat
    // (the chat requests of that stretch counted at their cost alone); cores busy per process.
    let chat_cpu_us = (after_alone[0] - before[0]) / alone.requests as f64 * 1e6;
    let outcome_cpu_us = ((after_both[0] - after_alone[0])
        - with_feedback.requests as f64 * chat_cpu_us / 1e6)
        / stream.requests as f64
        * 1e6;
    let cores = |from: [f64; 2], to: [f64; 2], wall: f64| {
        let [server, client] = [0, 1].map(|p| (to[p] - from[p]) / wall);
        json!({"server": server, "client": client})
    };
    let cpu = json!({
        "server_us_per_chat": chat_cpu_us,
        "server_us_per_outcome": outcome_cpu_us,
        "cores_chat_alone": cores(before, after_alone, seconds),
        "cores_with_outcomes": cores(after_alone, after_both, seconds),
    });
    // Outcomes alone: decisions made up front, then posted by 64 clients.
    let route = format!("{}/v1/route", server.base);
    let http = reqwest::Client::new();
    let (ids, decisions) = tokio::sync::mpsc::unbounded_channel();
    let mut made = 0;
    while made < 4000 {
        for query in queries.iter().take(4000 - made) {
            let decision: Value = http
                .post(&route)
                .json(&json!({"input": query}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ids.send(decision["decision_id"].as_str().unwrap().to_string())
                .unwrap();
            made += 1;
        }
    }
    drop(ids);
    let started = Instant::now();
    let latencies = post_outcomes(&server.base, decisions, 64).await;
    let burst = Level::of(latencies, started.elapsed().as_secs_f64());
    println!(
        "chat alone at 16: {:.1} req/s (p50 {:.2} ms, p99 {:.2} ms); with outcomes posted: {:.1} \
         req/s (p50 {:.2} ms, p99 {:.2} ms), {:.1} outcomes/s (p99 {:.2} ms); outcomes alone at \
         64: {:.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
        alone.per_s,
        alone.p50_ms,
        alone.p99_ms,
        with_feedback.per_s,
        with_feedback.p50_ms,
        with_feedback.p99_ms,
        stream.per_s,
        stream.p99_ms,
        burst.per_s,
        burst.p50_ms,
        burst.p99_ms
    );
    println!(
        "server CPU: {chat_cpu_us:.0} µs per chat request, {outcome_cpu_us:.0} µs more per \
         outcome; cores busy (server, client): chat alone {:.2}, {:.2}; with outcomes {:.2}, {:.2}",
        cpu["cores_chat_alone"]["server"],
        cpu["cores_chat_alone"]["client"],
        cpu["cores_with_outcomes"]["server"],
        cpu["cores_with_outcomes"]["client"]
    );
    json!({"chat_alone": alone.json(), "chat_with_feedback": with_feedback.json(),
           "feedback_stream": stream.json(), "feedback_alone_64": burst.json(),
           "routing_throughput_ratio": with_feedback.per_s / alone.per_s, "cpu": cpu})
}

#[tokio::main]
async fn main() {
    let options = parse_options();
    let queries = bundled_queries(true, options.words);
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let extra: Vec<&str> = match (options.feedback, options.latency) {
        (true, _) => vec!["--state", state.to_str().unwrap(), "--snapshot-every", "5s"],
        (_, true) => vec!["--latency-window", "3s"],
        _ => Vec::new(),
    };
    let config = format!("[upstream.default]\nbase_url = \"{}\"\n", mock.base_url);
    let dtype = ["--dtype", options.dtype.as_str()];
    let server = start_server(
        &options.router,
        dir.path(),
        &config,
        &[&dtype, &extra[..]].concat(),
    )
    .await;
    let http = reqwest::Client::new();
    let kroute_url = format!("{}/v1/chat/completions", server.base);
    let mock_url = format!("{}/chat/completions", mock.base_url);

    if options.feedback {
        let levels = feedback_levels(&server, &queries, options.seconds).await;
        println!("{levels}");
        return;
    }

    if options.latency {
        let phases = latency_phases(&kroute_url, &mock, &queries).await;
        println!("{phases}");
        return;
    }

    if options.decision_log {
        let log_dir = dir.path().join("decisions");
        let log_flags = [
            "--decision-log",
            log_dir.to_str().unwrap(),
            "--log-queries",
            "--decision-log-rotate",
            "5000,5s",
        ];
        let flags = [&dtype, &log_flags[..]].concat();
        let logging = start_server(&options.router, dir.path(), &config, &flags).await;
        let logging_url = format!("{}/v1/chat/completions", logging.base);
        println!(
            "{:>11}  {:>12}  {:>12}  {:>12}  {:>12}",
            "concurrency", "req/s off", "req/s on", "p50 ms off", "p50 ms on"
        );
        let mut rows = Vec::new();
        for &concurrency in &options.concurrency {
            let half = options.seconds / 2.0;
            let mut off = Vec::new();
            let mut on = Vec::new();
            for _ in 0..2 {
                off.push(measure(&kroute_url, &queries, concurrency, half).await);
                on.push(measure(&logging_url, &queries, concurrency, half).await);
            }
            let mean = |levels: &[Level], f: fn(&Level) -> f64| {
                levels.iter().map(f).sum::<f64>() / levels.len() as f64
            };
            let (per_s, p50, p99) = (
                |l: &Level| l.per_s,
                |l: &Level| l.p50_ms,
                |l: &Level| l.p99_ms,
            );
            println!(
                "{:>11}  {:>12.1}  {:>12.1}  {:>12.2}  {:>12.2}",
                concurrency,
                mean(&off, per_s),
                mean(&on, per_s),
                mean(&off, p50),
                mean(&on, p50)
            );
            let row = json!({
                "concurrency": concurrency,
                "per_s_off": mean(&off, per_s), "per_s_on": mean(&on, per_s),
                "p50_ms_off": mean(&off, p50), "p50_ms_on": mean(&on, p50),
                "p99_ms_off": mean(&off, p99), "p99_ms_on": mean(&on, p99),
            });
            rows.push(row);
        }
        drop(logging);
        let files = std::fs::read_dir(&log_dir).map_or(0, |d| d.count());
        println!("{}", json!({"decision_log": rows, "log_files": files}));
        return;
    }

    if let Some(seconds) = options.soak {
        let pid = server.child.id();
        let mut samples = vec![(0.0, rss_mib(pid))];
        let started = Instant::now();
        let mut requests = 0;
        while started.elapsed().as_secs_f64() < seconds {
            requests += load(&kroute_url, &queries, 64, 10.0, None).await.len();
            samples.push((started.elapsed().as_secs_f64(), rss_mib(pid)));
            eprintln!(
                "{:>5.0} s  {:>8} requests  RSS {:.1} MiB",
                samples.last().unwrap().0,
                requests,
                samples.last().unwrap().1
            );
        }
        let rss: Vec<f64> = samples.iter().map(|s| s.1).collect();
        println!(
            "{}",
            json!({"soak_seconds": seconds, "concurrency": 64, "requests": requests,
                   "rss_mib": rss, "rss_first_minute_mib": rss[rss.len().min(7) - 1],
                   "rss_last_mib": rss.last()})
        );
        return;
    }

    println!(
        "{:>11}  {:>8}  {:>9}  {:>9}  {:>9}  {:>12}  {:>12}",
        "concurrency", "requests", "req/s", "p50 ms", "p99 ms", "direct p50", "direct p99"
    );
    let mut rows = Vec::new();
    for &concurrency in &options.concurrency {
        let through = measure(&kroute_url, &queries, concurrency, options.seconds).await;
        let direct = measure(&mock_url, &queries, concurrency, options.seconds.min(5.0)).await;
        println!(
            "{:>11}  {:>8}  {:>9.1}  {:>9.2}  {:>9.2}  {:>12.2}  {:>12.2}",
            concurrency,
            through.requests,
            through.per_s,
            through.p50_ms,
            through.p99_ms,
            direct.p50_ms,
            direct.p99_ms
        );
        rows.push(
            json!({"concurrency": concurrency, "requests": through.requests,
            "requests_per_s": through.per_s, "p50_ms": through.p50_ms, "p99_ms": through.p99_ms,
            "direct_p50_ms": direct.p50_ms, "direct_p99_ms": direct.p99_ms}),
        );
    }
    // The encoder's batched ceiling: the same queries 64 to a request, one request at a time.
    let embeddings_url = format!("{}/v1/embeddings", server.base);
    let started = Instant::now();
    let mut embedded = 0;
    for batch in queries.chunks(64).take(20) {
        let response = http
            .post(&embeddings_url)
            .json(&json!({"input": batch}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        embedded += batch.len();
    }
    let ceiling = embedded as f64 / started.elapsed().as_secs_f64();
    println!("encoder ceiling (64 queries per /v1/embeddings request): {ceiling:.1} queries/s");
    let tokens: Vec<usize> = queries
        .iter()
        .map(|q| q.split_whitespace().count())
        .collect();
    println!(
        "{}",
        json!({"words_per_query": options.words,
               "mean_words": tokens.iter().sum::<usize>() as f64 / tokens.len() as f64,
               "seconds_per_level": options.seconds, "levels": rows,
               "encoder_ceiling_queries_per_s": ceiling,
               "rss_mib_after": rss_mib(server.child.id())})
    );
}
