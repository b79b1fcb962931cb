//! What the benches share: the bundled RouterBench queries, `kroute serve` as a child process,
//! a process's memory and open files as /proc reports them, and percentiles.
#![allow(dead_code)] // each bench uses its own part

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The queries of the bundled RouterBench records (only the test split's with `test_only`),
/// each cut to its first `words` words.
pub fn bundled_queries(test_only: bool, words: usize) -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/routerbench-3k.jsonl.gz");
    let reader = flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap());
    std::io::BufReader::new(reader)
        .lines()
        .map(|line| serde_json::from_str::<Value>(&line.unwrap()).unwrap())
        .filter(|record| !test_only || record["split"] == "test")
        .map(|record| {
            let query = record["query"].as_str().unwrap();
            query
                .split_whitespace()
                .take(words)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// A number from `/proc/PROCESS/status` (`process` a pid or `self`), in the unit it has there
/// (kB for memory); NaN when it cannot be read.
pub fn proc_status(process: &str, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// CPU seconds (user + system, all threads) that `process` (a pid or `self`) has used so far.
pub fn cpu_seconds(process: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces: utime and
    // stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / per_second,
        _ => f64::NAN,
    }
}

/// Resident memory of process `pid` in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    proc_status(&pid.to_string(), "VmRSS:") / 1024.0
}

pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A `kroute serve` child process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// When the process was started.
    pub started: Instant,
    /// From "listening" to the first 200 of `/health`.
    pub ready_after: Duration,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `config` to `dir/kroute.toml`, starts `kroute serve --router ROUTER --port 0
/// --config it` with `args`, and waits until `/health` answers. What the server warns of while
/// starting and after is printed as it comes; its other lines are shown only if it never
/// listens.
pub async fn start_server(router: &str, dir: &Path, config: &str, args: &[&str]) -> Server {
    let config_path = dir.join("kroute.toml");
    std::fs::write(&config_path, config).unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kroute"))
        .args(["serve", "--router", router, "--port", "0", "--config"])
        .arg(&config_path)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("WARN") || line.contains("skipped") {
                eprintln!("kroute serve: {line}");
            }
            let listening = line.split("listening on ").nth(1);
            let event = listening.map(|rest| rest.split_whitespace().next().unwrap().to_string());
            // Once the bench holds the address nobody reads the channel; lines still drain.
            let _ = tx.send(event.ok_or(line));
        }
    });
    let mut log = Vec::new();
    let base = loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(base)) => break base,
            Ok(Err(line)) => log.push(line),
            Err(_) => panic!("kroute serve did not start:\n{}", log.join("\n")),
        }
    };
    let listening = Instant::now();
    let http = reqwest::Client::new();
    loop {
        let health = http.get(format!("{base}/health")).send().await;
        if health.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Server {
        child,
        base,
        started,
        ready_after: listening.elapsed(),
    }
}
