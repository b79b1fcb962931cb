//! Routing records: what a valid file means (model order, not-evaluated scores, defaults) and
//! every malformed case failing with its file, line and field.

use std::path::PathBuf;

use kroute::records::{Exclusion, MissingCost, RecordIndex, RoutingData, Split, SplitOptions};
use serde_json::json;

/// Writes `lines` to a `.jsonl` file in a fresh directory.
fn records_file(lines: &[String]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (dir, path)
}

fn good(query: &str) -> serde_json::Value {
    json!({
        "query": query,
        "records": {"zeta": 1, "alpha": 0.5, "mid": null},
        "usages": {"zeta": {"cost": 0.002, "prompt_tokens": 10}, "alpha": {"cost": 0.001}},
        "dataset": "gpqa",
        "index": 3,
        "full_prompt": "unknown fields are ignored",
    })
}

fn read_error(lines: &[String], missing_cost: MissingCost) -> String {
    let (_dir, path) = records_file(lines);
    let err = RoutingData::read(&path, missing_cost)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(path.to_str().unwrap()), "{err}");
    err
}

#[test]
fn valid_records_keep_model_order_and_not_evaluated_scores() {
    let mut second = good("second");
    second["records"] = json!({"mid": true, "zeta": false});
    second["usages"] = json!({"mid": {"cost": 0.5}, "zeta": {"cost": 0.25}});
    second["index"] = json!("q-7");
    second.as_object_mut().unwrap().remove("dataset");
    let (_dir, path) =
        records_file(&[good("first").to_string(), String::new(), second.to_string()]);
    let data = RoutingData::read(&path, MissingCost::Error).unwrap();

    // The first record's key order, not alphabetical.
    assert_eq!(data.models, ["zeta", "alpha", "mid"]);
    assert_eq!(data.records.len(), 2, "blank lines are skipped");
    let (a, b) = (&data.records[0], &data.records[1]);
    assert_eq!(a.scores, [Some(1.0), Some(0.5), None]);
    assert_eq!(a.costs, [Some(0.002), Some(0.001), None]);
    assert_eq!(a.usage_extras[0]["prompt_tokens"], json!(10));
    // Tokens need both counts (or their `_est` estimates).
    assert_eq!(a.tokens, [None, None, None]);
    assert_eq!(a.index, Some(RecordIndex::Int(3)));
    assert_eq!((a.dataset.as_str(), a.line), ("gpqa", 1));
    // Booleans are scores; a missing key is "not evaluated", like null.
    assert_eq!(b.scores, [Some(0.0), None, Some(1.0)]);
    assert_eq!(b.index, Some(RecordIndex::Str("q-7".into())));
    assert_eq!((b.dataset.as_str(), b.line), ("default", 3));

    let summary = data.summary();
    let alpha = &summary.models[1];
    assert_eq!((alpha.evaluated, alpha.mean_accuracy), (1, Some(0.5)));
    let zeta = &summary.models[0];
    assert_eq!(
        zeta.mean_accuracy,
        Some(0.5),
        "not counted as 0 when not evaluated"
    );
    assert!((zeta.total_cost - 0.252).abs() < 1e-12);
    assert_eq!(zeta.usage_totals["prompt_tokens"], json!(10.0));
    assert_eq!(zeta.with_tokens, 0);
}

#[test]
fn token_counts_are_read_with_their_estimates_and_checked() {
    let mut record = good("q");
    record["usages"]["zeta"] = json!({"cost": 0.002, "prompt_tokens": 10, "completion_tokens": 4});
    record["usages"]["alpha"] =
        json!({"cost": 0.001, "prompt_tokens_est": 7, "completion_tokens_est": 2.5});
    let (_dir, path) = records_file(&[record.to_string()]);
    let data = RoutingData::read(&path, MissingCost::Error).unwrap();
    assert_eq!(
        data.records[0].tokens,
        [Some([10.0, 4.0]), Some([7.0, 2.5]), None]
    );
    assert_eq!(data.summary().models[1].with_tokens, 1);

    record["usages"]["zeta"]["completion_tokens"] = json!(-4);
    let error = read_error(
        &[good("a").to_string(), record.to_string()],
        MissingCost::Error,
    );
    assert!(
        error.ends_with(":2: field `usages.zeta.completion_tokens`: token count -4 is negative"),
        "{error}"
    );
    record["usages"]["zeta"]["completion_tokens"] = json!("many");
    let error = read_error(
        &[good("a").to_string(), record.to_string()],
        MissingCost::Error,
    );
    assert!(
        error.contains("expected a token count, found a string"),
        "{error}"
    );
}

#[test]
fn latencies_are_read_and_checked() {
    let mut record = good("q");
    record["usages"]["zeta"] = json!({"cost": 0.002, "latency_s": 1.25});
    let (_dir, path) = records_file(&[record.to_string()]);
    let data = RoutingData::read(&path, MissingCost::Error).unwrap();
    assert_eq!(data.records[0].latencies, [Some(1.25), None, None]);
    for (bad, message) in [
        (json!(-1), "latency -1 is negative"),
        (json!("fast"), "expected seconds, found a string"),
    ] {
        record["usages"]["zeta"]["latency_s"] = bad;
        let error = read_error(&[record.to_string()], MissingCost::Error);
        assert!(
            error.ends_with(&format!(":1: field `usages.zeta.latency_s`: {message}")),
            "{error}"
        );
    }
}

#[test]
fn every_malformed_record_names_file_line_and_field() {
    let g = || good("q");
    let with = |field: &str, value: serde_json::Value| {
        let mut record = g();
        record[field] = value;
        record.to_string()
    };
    let without = |field: &str| {
        let mut record = g();
        record.as_object_mut().unwrap().remove(field);
        record.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        ("{\"query\": ".into(), ":2: malformed JSON"),
        (
            "[1, 2]".into(),
            ":2: expected a JSON object, found an array",
        ),
        (without("query"), ":2: field `query`: missing"),
        (with("query", json!("  ")), ":2: field `query`: empty text"),
        (
            with("query", json!(7)),
            ":2: field `query`: expected a string, found a number",
        ),
        (without("records"), ":2: field `records`: missing"),
        (
            with("records", json!([1])),
            ":2: field `records`: expected an object",
        ),
        (
            with("records", json!({"zeta": 1.5})),
            ":2: field `records.zeta`: score 1.5 is outside [0, 1]",
        ),
        (
            with("records", json!({"zeta": "yes"})),
            ":2: field `records.zeta`: expected a score",
        ),
        (
            with("records", json!({"omega": 1})),
            ":2: field `records.omega`: model not in the first record",
        ),
        (
            with("usages", json!({"zeta": {"cost": 0.1}})),
            ":2: field `usages.alpha.cost`: missing for an evaluated model",
        ),
        (
            with(
                "usages",
                json!({"zeta": {"cost": -1}, "alpha": {"cost": 0}}),
            ),
            ":2: field `usages.zeta.cost`: cost -1 is negative",
        ),
        (
            with(
                "usages",
                json!({"zeta": {"cost": "1$"}, "alpha": {"cost": 0}}),
            ),
            ":2: field `usages.zeta.cost`: expected dollars as a number",
        ),
        (
            with("usages", json!({"zeta": 3, "alpha": {"cost": 0}})),
            ":2: field `usages.zeta`: expected an object",
        ),
        (
            with("index", json!(1.5)),
            ":2: field `index`: expected an integer or a string",
        ),
        (
            with("index", json!([1])),
            ":2: field `index`: expected an integer or a string, found an array",
        ),
        (
            with("dataset", json!(3)),
            ":2: field `dataset`: expected a string",
        ),
        (
            with("split", json!("dev")),
            ":2: field `split`: `dev` is not a split",
        ),
    ];
    for (bad, expected) in cases {
        let err = read_error(&[g().to_string(), bad.clone()], MissingCost::Error);
        assert!(
            err.contains(expected),
            "{bad}\n  gave: {err}\n  want: {expected}"
        );
    }
    // A split on some records only.
    let err = read_error(
        &[g().to_string(), with("split", json!("train"))],
        MissingCost::Error,
    );
    assert!(
        err.contains(":1: field `split`: missing here but given on line 2"),
        "{err}"
    );
    // The first record must name the models.
    let err = read_error(&[with("records", json!({}))], MissingCost::Error);
    assert!(err.contains(":1: field `records`: empty"), "{err}");
    // An empty file.
    let err = read_error(&[String::new()], MissingCost::Error);
    assert!(err.contains("no records"), "{err}");
}

#[test]
fn missing_cost_zero_counts_instead_of_failing() {
    let mut record = good("q");
    record["usages"] = json!({"zeta": {"cost": 0.1}});
    let lines = [good("p").to_string(), record.to_string()];
    let err = read_error(&lines, MissingCost::Error);
    assert!(err.contains("--missing-cost zero"), "{err}");
    let (_dir, path) = records_file(&lines);
    let data = RoutingData::read(&path, MissingCost::Zero).unwrap();
    assert_eq!(data.missing_costs, 1);
    assert_eq!(data.records[1].costs, [Some(0.1), Some(0.0), None]);
}

fn dataset_records(datasets: &[(&str, usize)], split: bool) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, n) in datasets {
        for i in 0..*n {
            let mut record = good(&format!("{name} {i}"));
            record["dataset"] = json!(name);
            if split {
                record["split"] = json!(if i % 4 == 0 { "test" } else { "train" });
            }
            lines.push(record.to_string());
        }
    }
    lines
}

#[test]
fn seeded_split_is_per_dataset_reproducible_and_honours_exclusions() {
    let (_dir, path) = records_file(&dataset_records(&[("a", 10), ("b", 31)], false));
    let data = RoutingData::read(&path, MissingCost::Error).unwrap();
    let options = SplitOptions::default();
    let sides = data.split(&options).unwrap();
    let count = |rows: &[usize], name: &str| {
        rows.iter()
            .filter(|&&i| data.records[i].dataset == name)
            .count()
    };
    // ⌊0.7·n⌋ of each dataset trains.
    assert_eq!((count(&sides.train, "a"), count(&sides.test, "a")), (7, 3));
    assert_eq!(
        (count(&sides.train, "b"), count(&sides.test, "b")),
        (21, 10)
    );
    assert_eq!(
        data.split(&options).unwrap(),
        sides,
        "same seed, same split"
    );
    let other = data
        .split(&SplitOptions {
            seed: 7,
            ..options.clone()
        })
        .unwrap();
    assert_ne!(other.train, sides.train);

    let hard = data
        .split(&SplitOptions {
            exclude_datasets: vec!["b".into()],
            ..options.clone()
        })
        .unwrap();
    assert_eq!((hard.train.len(), hard.test.len()), (7, 3));
    let soft = data
        .split(&SplitOptions {
            exclude_datasets: vec!["b".into()],
            exclusion: Exclusion::Soft,
            ..options.clone()
        })
        .unwrap();
    assert_eq!((soft.train.len(), soft.test.len()), (7 + 31, 3));
    let err = data
        .split(&SplitOptions {
            exclude_datasets: vec!["c".into()],
            ..options
        })
        .unwrap_err();
    assert!(err.to_string().contains("no dataset `c`"), "{err}");
}

#[test]
fn split_field_wins_and_models_can_be_excluded() {
    let (_dir, path) = records_file(&dataset_records(&[("a", 8)], true));
    let mut data = RoutingData::read(&path, MissingCost::Error).unwrap();
    let sides = data
        .split(&SplitOptions {
            train_ratio: 0.1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(sides.test, [0, 4]);
    assert!(sides
        .test
        .iter()
        .all(|&i| data.records[i].split == Some(Split::Test)));
    assert_eq!(sides.train.len(), 6);

    data.exclude_models(&["alpha".into()]).unwrap();
    assert_eq!(data.models, ["zeta", "mid"]);
    assert_eq!(data.records[0].scores, [Some(1.0), None]);
    let err = data.exclude_models(&["nope".into()]).unwrap_err();
    assert!(err.to_string().contains("no model `nope`"), "{err}");
}
