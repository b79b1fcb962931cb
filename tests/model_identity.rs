//! The embedding model's identity travels with routers and embedding files: a router trained
//! with a prompt routes with it, and `route` and `eval --embeddings` refuse vectors that would
//! differ, naming the field. Runs the binary on the tiny XLM-RoBERTa checkpoint (a default
//! `query` prompt and a `passage` one).

mod common;

use common::{bundled_sample, fixture_path, run, run_json};

fn tiny_model() -> String {
    fixture_path("tiny/xlm-roberta")
        .to_str()
        .unwrap()
        .to_string()
}

fn router_json(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("router.json")).unwrap()).unwrap()
}

#[test]
fn a_router_keeps_its_prompt_and_refuses_other_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let data = bundled_sample(dir.path(), 120, true);
    let router = dir.path().join("router");
    let model = tiny_model();
    let (ok, stderr) = run(&[
        "train",
        data.to_str().unwrap(),
        "-o",
        router.to_str().unwrap(),
        "--model",
        &model,
        "--prompt-name",
        "passage",
        "--clusters",
        "4",
        "--n-init",
        "1",
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    let embedding = &router_json(&router)["embedding"];
    assert_eq!(embedding["prompt"], "passage: ");
    assert_eq!(embedding["architecture"], "xlm-roberta");
    assert_eq!(embedding["pooling"], "mean");
    assert_eq!(embedding["model"], model.as_str());

    // Routing uses the router's prompt, not the model's default one.
    let query = "Which planet is the largest?";
    let routed = run_json(&["route", router.to_str().unwrap(), query, "--explain"]);
    assert!(routed["model"].is_string(), "{routed}");
    // Asking for other vectors is refused, naming the field and the flag that fixes it.
    for (flags, field, fix) in [
        (
            vec!["--prompt", "query: "],
            "`prompt`",
            "--prompt \"passage: \"",
        ),
        (
            vec!["--prompt-name", "query"],
            "`prompt`",
            "--prompt \"passage: \"",
        ),
        (vec!["--pooling", "cls"], "`pooling`", "--pooling mean"),
        (
            vec!["--max-seq-length", "16"],
            "`max_seq_length`",
            "--max-seq-length 48",
        ),
    ] {
        let mut args = vec!["route", router.to_str().unwrap(), query];
        args.extend(flags.iter().copied());
        let (ok, stderr) = run(&args);
        assert!(!ok, "{flags:?} accepted");
        assert!(
            stderr.contains(&format!("embedding model mismatch in {field}"))
                && stderr.contains(fix),
            "{flags:?}: {stderr}"
        );
    }
    // The same prompt given explicitly is the same model.
    let again = run_json(&[
        "route",
        router.to_str().unwrap(),
        query,
        "--prompt",
        "passage: ",
        "--explain",
    ]);
    assert_eq!(again, routed);
}

#[test]
fn embedding_files_carry_the_identity_and_eval_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = bundled_sample(dir.path(), 160, false);
    let embeddings = dir.path().join("emb.safetensors");
    let model = tiny_model();
    let (ok, stderr) = run(&[
        "embed",
        data.to_str().unwrap(),
        "-o",
        embeddings.to_str().unwrap(),
        "--model",
        &model,
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    let bytes = std::fs::read(&embeddings).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["architecture"], "xlm-roberta");
    assert_eq!(meta["prompt"], "query: ", "the model's default prompt");
    assert_eq!(meta["pooling"], "mean");
    assert_eq!(meta["max_seq_length"], "48");

    let eval = |extra: &[&str]| {
        let report = dir.path().join("report");
        let mut args = vec![
            "eval",
            data.to_str().unwrap(),
            "--embeddings",
            embeddings.to_str().unwrap(),
            "-o",
            report.to_str().unwrap(),
            "--seeds",
            "1",
            "--alphas",
            "0,1",
            "--clusters",
            "4",
            "--n-init",
            "1",
            "--no-plots",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (ok, stderr) = eval(&[]);
    assert!(ok, "{stderr}");
    let (ok, stderr) = eval(&["--model", &model, "--prompt", ""]);
    assert!(!ok);
    assert!(
        stderr.contains("embedding model mismatch in `prompt`")
            && stderr.contains("emb.safetensors"),
        "{stderr}"
    );
    let (ok, stderr) = eval(&["--model", &model]);
    assert!(ok, "the file's own model and prompt: {stderr}");
}

/// The whole pipeline on a Qwen3 embedder (the tiny random-weight checkpoint, so the pipeline,
/// not the quality): train with the instruction prompt and Matryoshka dimensions, evaluate, route.
#[test]
fn a_qwen3_router_trains_evaluates_and_routes() {
    let dir = tempfile::tempdir().unwrap();
    let data = bundled_sample(dir.path(), 200, false);
    let model = fixture_path("tiny/qwen3").to_str().unwrap().to_string();
    let router = dir.path().join("router");
    let common = [
        "--model",
        model.as_str(),
        "--prompt-name",
        "query",
        "--dimensions",
        "16",
        "--clusters",
        "5",
        "--n-init",
        "2",
        "--quiet",
    ];
    let mut train = vec![
        "train",
        data.to_str().unwrap(),
        "-o",
        router.to_str().unwrap(),
    ];
    train.extend(common);
    let (ok, stderr) = run(&train);
    assert!(ok, "{stderr}");
    let embedding = &router_json(&router)["embedding"];
    assert_eq!(embedding["architecture"], "qwen3");
    assert_eq!(embedding["pooling"], "last");
    assert_eq!(embedding["dim"], 16);
    assert!(embedding["prompt"]
        .as_str()
        .unwrap()
        .starts_with("Instruct: "));

    let report = dir.path().join("report");
    let mut eval = vec![
        "eval",
        data.to_str().unwrap(),
        "-o",
        report.to_str().unwrap(),
        "--seeds",
        "1,2",
        "--alphas",
        "0,0.5,1",
        "--no-plots",
    ];
    eval.extend(common);
    let (ok, stderr) = run(&eval);
    assert!(ok, "{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["runs"]["runs"].as_array().unwrap().len(), 2);

    let routed = run_json(&[
        "route",
        router.to_str().unwrap(),
        "Write a function that merges two sorted lists",
    ]);
    assert!(routed["model"].is_string(), "{routed}");
    let (ok, stderr) = run(&[
        "route",
        router.to_str().unwrap(),
        "a query",
        "--dimensions",
        "32",
    ]);
    assert!(!ok && stderr.contains("mismatch in `dim`"), "{stderr}");
}
