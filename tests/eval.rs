//! Evaluation: every metric on hand-computed tiny data, the headline rules, α=1 versus α=0 on
//! the training set, the report files (Markdown, JSON, SVG, PNG), and `kroute eval`/`calibrate`
//! end to end on real records.

mod common;

use std::path::Path;

use common::{bundled_sample, embedder, run, run_json};
use kroute::cluster::KMeansConfig;
use kroute::eval::{Evaluation, PolicyMetrics, Report, SeedRun, TestSet};
use kroute::records::{MissingCost, RoutingData};
use kroute::router::{EmbeddingInfo, RouteParams, Router, Scoring};
use kroute::EmbedderOptions;
use serde_json::json;

/// Two datasets, three models ("a" accurate and dear, "b" cheap, "c" never evaluated on q2).
fn tiny_data(dir: &Path) -> RoutingData {
    let rows = [
        ("q0", "x", [1.0, 0.0, 1.0], [0.5, 0.1, 0.2]),
        ("q1", "x", [1.0, 1.0, 0.0], [0.5, 0.1, 0.2]),
        ("q2", "y", [0.0, 1.0, f64::NAN], [0.5, 0.1, 0.2]),
        ("q3", "y", [1.0, 0.0, 1.0], [0.5, 0.1, 0.3]),
        ("q4", "y", [0.0, 0.0, 0.0], [0.5, 0.1, 0.2]),
    ];
    let lines: Vec<String> = rows
        .iter()
        .map(|(q, d, s, c)| {
            let score = |v: f64| if v.is_nan() { json!(null) } else { json!(v) };
            // Latencies: "a" always 2 s, "b" 0.5 s on q0, q2 and q4, "c" never.
            let b_latency = ["q0", "q2", "q4"].contains(q).then_some(0.5);
            json!({
                "query": q, "dataset": d,
                "records": {"a": score(s[0]), "b": score(s[1]), "c": score(s[2])},
                "usages": {"a": {"cost": c[0], "latency_s": 2.0},
                           "b": {"cost": c[1], "latency_s": b_latency}, "c": {"cost": c[2]}},
            })
            .to_string()
        })
        .collect();
    let path = dir.join("tiny.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    RoutingData::read(&path, MissingCost::Error).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn metrics_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_data(dir.path());
    let test = TestSet::new(&data, (0..5).collect());
    assert_eq!(test.datasets, ["x", "y"]);

    // Always "a": x = (1 + 1)/2 = 1, y = (0 + 1 + 0)/3; average over datasets, not queries.
    let a = test.single(0);
    assert!(close(a.accuracy_by_dataset[0], 1.0) && close(a.accuracy_by_dataset[1], 1.0 / 3.0));
    assert!(close(a.average_accuracy, (1.0 + 1.0 / 3.0) / 2.0));
    assert!(close(a.cost, 2.5) && close(a.cost_per_query, 0.5));
    assert_eq!(a.selection, [1.0, 0.0, 0.0]);
    assert_eq!(a.latency_per_query, Some(2.0));

    // Always "c": q2 is not evaluated, so y = (1 + 0)/2, and q2's cost still counts.
    let c = test.single(2);
    assert_eq!(c.unscored, 1);
    assert_eq!(c.latency_per_query, None);
    assert!(close(c.accuracy_by_dataset[1], 0.5));
    assert!(close(c.cost, 1.1));

    // A mixed policy.
    let mixed = test.score(&[1, 1, 1, 0, 2]);
    assert!(close(mixed.accuracy_by_dataset[0], 0.5));
    assert!(close(mixed.accuracy_by_dataset[1], 2.0 / 3.0));
    assert!(close(mixed.cost, 0.1 + 0.1 + 0.1 + 0.5 + 0.2));
    assert!(close(mixed.selection[1], 0.6));
    // Latency over the answers that have one: b on q0 and q2 (q1 has none), a on q3.
    assert!(close(
        mixed.latency_per_query.unwrap(),
        (0.5 + 0.5 + 2.0) / 3.0
    ));

    // Oracle: the cheapest of the best per query; q4 (nobody right) goes to the cheapest, "b".
    // q0: a or c → c ($0.2); q1: a or b → b; q2: b; q3: a or c → c ($0.3); q4: b.
    let oracle = test.oracle();
    assert!(close(oracle.accuracy_by_dataset[0], 1.0));
    assert!(close(oracle.accuracy_by_dataset[1], 2.0 / 3.0));
    assert!(close(oracle.cost, 0.2 + 0.1 + 0.1 + 0.3 + 0.1));
}

fn metrics(accuracy: f64, cost: f64) -> PolicyMetrics {
    PolicyMetrics {
        accuracy_by_dataset: vec![accuracy],
        average_accuracy: accuracy,
        cost,
        cost_per_query: cost / 10.0,
        latency_per_query: Some(cost / 4.0),
        unscored: 0,
        selection: vec![0.5, 0.5],
    }
}

/// Best single model "big" 0.80 at $10; router points at α = 0, 0.5, 0.8, 1.
fn hand_report() -> Report {
    let singles = vec![metrics(0.60, 1.0), metrics(0.80, 10.0)];
    let oracle = metrics(0.90, 2.0);
    let router = vec![
        metrics(0.60, 1.0),
        metrics(0.74, 3.0),
        metrics(0.80, 6.0),
        metrics(0.85, 9.0),
    ];
    let run = SeedRun {
        seed: 1,
        train_queries: 20,
        test_queries: 10,
        curve: kroute::eval::CurveAreas::of(&singles, &oracle, &router),
        singles,
        oracle,
        router,
    };
    Report::new(Evaluation {
        holdout: "test",
        models: vec!["small".into(), "big".into()],
        datasets: vec!["d".into()],
        alphas: vec![0.0, 0.5, 0.8, 1.0],
        runs: vec![run],
    })
}

#[test]
fn headline_rules() {
    let h = hand_report().headlines;
    assert_eq!(h.best_single, "big");
    // The cheapest α with accuracy ≥ 0.80 is 0.8 ($6 vs $10: 40 % less).
    let matched = h.matches_best_single.unwrap();
    assert_eq!(matched.alpha, 0.8);
    assert!(close(matched.cost_saving, 0.4));
    // 90 % of 0.80 is 0.72: α = 0.5 at $3.
    let ninety = h.reaches_90_percent.unwrap();
    assert_eq!(ninety.alpha, 0.5);
    assert!(close(ninety.cost_saving, 0.7));
    // Best router point 0.85 at α = 1: +5 points, half of the gap to the oracle's 0.90.
    assert_eq!(h.best_router.alpha, 1.0);
    assert!((h.accuracy_gain_points - 5.0).abs() < 1e-9);
    assert!((h.oracle_gap_closed.unwrap() - 0.5).abs() < 1e-9);
    // α = 0 equals "small" exactly (not strictly better): "small" is not dominated; "big" is.
    assert_eq!(h.dominated, ["big"]);
    assert!(h
        .lines
        .iter()
        .any(|l| l.contains("α=0.80 matches the best single model (big, 0.800) at -40 % cost")));
}

#[test]
fn whole_curve_by_hand() {
    // Costs relative to "big" ($10). Singles: (0.1, 0.60), (1, 0.80) under the hull from the
    // origin: 0.1·0.6/2 + 0.9·1.4/2 = 0.66. Router: (0.1, 0.60), (0.3, 0.74), (0.6, 0.80),
    // (0.9, 0.85), flat to 1: 0.03 + 0.134 + 0.231 + 0.2475 + 0.085 = 0.7275. Oracle (0.2,
    // 0.90): 0.09 + 0.72 = 0.81. Gap closed: 0.0675 / 0.15 = 0.45.
    let curve = hand_report().curve;
    assert!(close(curve.singles.mean, 0.66));
    assert!(close(curve.router.mean, 0.7275));
    assert!(close(curve.oracle.mean, 0.81));
    assert!(close(curve.gap_closed.unwrap().mean, 0.45));
}

#[test]
fn report_files_parse_and_plots_are_valid_images() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let report = hand_report();
    report.write(&out, true).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["headlines"]["best_single"], "big");
    assert_eq!(json["rows"].as_array().unwrap().len(), 2 + 1 + 4);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| Setting | d | Avg. A | Cost | Latency |"),
        "{md}"
    );
    assert!(
        md.contains("| **router α=0.80** | 0.800 | 0.800 | $6.00 | 1.50 s |"),
        "{md}"
    );
    assert_eq!(json["rows"][0]["latency_per_query"]["mean"], 0.25);
    for name in ["accuracy_vs_cost", "alpha_sweep", "selection_share"] {
        let svg = std::fs::read_to_string(out.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}.svg"
        );
        let png = std::fs::read(out.join(format!("{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}.png signature");
        assert_eq!(&png[12..16], b"IHDR");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((width, height), (960, 640));
    }
    // Writing again replaces the report; another directory is never overwritten.
    report.write(&out, false).unwrap();
    assert!(!out.join("alpha_sweep.svg").exists());
    let other = dir.path().join("mine");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "x").unwrap();
    assert!(report.write(&other, false).is_err());
}

#[test]
fn alpha_one_is_never_less_accurate_than_lower_alphas_on_the_training_set() {
    let dir = tempfile::tempdir().unwrap();
    let data =
        RoutingData::read(&bundled_sample(dir.path(), 300, false), MissingCost::Error).unwrap();
    let rows: Vec<usize> = (0..data.records.len()).collect();
    let embedder = embedder(EmbedderOptions::default());
    let queries: Vec<&str> = data.records.iter().map(|r| r.query.as_str()).collect();
    let embeddings = embedder.embed(&queries).unwrap();
    let kmeans = KMeansConfig {
        k: 12,
        n_init: 2,
        ..Default::default()
    };
    let router = Router::fit(
        &embeddings,
        &data,
        &rows,
        &kmeans,
        EmbeddingInfo::of(&embedder),
        RouteParams::default(),
    )
    .unwrap();
    // With one voting cluster, α = 1 picks each training query's cluster's most accurate model.
    let correct = |alpha: f64| -> f64 {
        let params = RouteParams {
            scoring: Scoring::Paper { alpha },
            top_p: 1,
            ..Default::default()
        };
        let routed = router.route(&embeddings, &params).unwrap();
        (0..routed.len())
            .map(|i| data.records[i].scores[routed.best(i)].unwrap_or(0.0))
            .sum()
    };
    let best = correct(1.0);
    for alpha in [0.0, 0.25, 0.5, 0.75, 0.9] {
        assert!(
            best >= correct(alpha),
            "α=1: {best} correct, α={alpha}: {}",
            correct(alpha)
        );
    }
    assert!(
        best > correct(0.0),
        "accuracy must cost something on real data"
    );
}

#[test]
fn eval_and_calibrate_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = bundled_sample(dir.path(), 240, false);
    let report = dir.path().join("report");
    let (ok, stderr) = run(&[
        "eval",
        data.to_str().unwrap(),
        "-o",
        report.to_str().unwrap(),
        "--seeds",
        "1,2",
        "--alphas",
        "0,0.5,1",
        "--clusters",
        "6",
        "--n-init",
        "2",
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("seeds 1 and 2 share 1 of their 2 k-means restarts"),
        "{stderr}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["seeds"], json!([1, 2]));
    assert_eq!(json["runs"]["runs"].as_array().unwrap().len(), 2);
    assert_eq!(json["rows"].as_array().unwrap().len(), 11 + 1 + 3);
    assert!(report.join("accuracy_vs_cost.png").is_file());

    let result = run_json(&[
        "calibrate",
        data.to_str().unwrap(),
        "--target-accuracy",
        "0.5",
        "--clusters",
        "4",
        "--n-init",
        "2",
        "--alphas",
        "0,0.5,1",
        "--json",
        "--quiet",
    ]);
    assert!(result["validation"]["average_accuracy"].as_f64().unwrap() >= 0.5);
    // The cheapest α that reaches it: no cheaper swept α does.
    let chosen_cost = result["validation"]["cost"].as_f64().unwrap();
    for point in result["sweep"].as_array().unwrap() {
        let m = &point["metrics"];
        if m["average_accuracy"].as_f64().unwrap() >= 0.5 {
            assert!(m["cost"].as_f64().unwrap() >= chosen_cost);
        }
    }
    let (ok, stderr) = run(&[
        "calibrate",
        data.to_str().unwrap(),
        "--target-accuracy",
        "0.999",
        "--clusters",
        "4",
        "--n-init",
        "1",
        "--alphas",
        "0,1",
        "--quiet",
    ]);
    assert!(
        !ok && stderr.contains("no α reaches average accuracy 0.999"),
        "{stderr}"
    );
}
