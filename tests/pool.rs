//! Changing a router's model pool without retraining, on real records and the real default
//! model: a model added from every training query gets exactly the statistics training with it
//! gives, removing one gives the router trained without it, repricing from token counts gives
//! the router trained on repriced records, a model can enter on a declared prior, and
//! `suggest` spreads its queries over the clusters.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use kroute::cluster::KMeansConfig;
use kroute::records::{MissingCost, RoutingData};
use kroute::router::{EmbeddingInfo, ModelPrior, Price, RouteParams, Router};
use kroute::{Embedder, EmbedderOptions};

const ADDED: &str = "gpt-4-1106-preview";

fn embedder() -> &'static Embedder {
    static EMBEDDER: std::sync::OnceLock<Embedder> = std::sync::OnceLock::new();
    EMBEDDER.get_or_init(|| common::embedder(EmbedderOptions::default()))
}

fn embed(data: &RoutingData) -> Tensor {
    let texts: Vec<&str> = data.records.iter().map(|r| r.query.as_str()).collect();
    embedder().embed(&texts).unwrap()
}

fn fit(data: &RoutingData, embeddings: &Tensor, k: usize, bag: usize, m: f64) -> Router {
    let rows: Vec<usize> = (0..data.records.len()).collect();
    let kmeans = KMeansConfig {
        k,
        n_init: 2,
        ..Default::default()
    };
    let params = RouteParams {
        prior_strength: m,
        ..RouteParams::default()
    };
    let info = EmbeddingInfo::of(embedder());
    Router::fit_bagged(embeddings, data, &rows, &kmeans, bag, info, params).unwrap()
}

fn routerbench(n: usize) -> RoutingData {
    let dir = tempfile::tempdir().unwrap();
    let path = common::bundled_sample(dir.path(), n, false);
    RoutingData::read(&path, MissingCost::Error).unwrap()
}

/// Model `name`'s (count, accuracy, cost) in every cluster.
type Cells = Vec<(usize, Option<f64>, Option<f64>)>;

fn cells(router: &Router, name: &str) -> Cells {
    let m = router.models.iter().position(|n| n == name).unwrap();
    router
        .clusters
        .iter()
        .map(|c| (c.count[m], c.accuracy[m], c.cost[m]))
        .collect()
}

/// `data` as a router trained without `model` sees it.
fn without(data: &RoutingData, model: &str) -> RoutingData {
    let mut rest = data.clone();
    rest.exclude_models(&[model.to_string()]).unwrap();
    rest
}

/// The first `n` records of `data`, where the model to add answers as trained model `model` does.
fn answering_as(data: &RoutingData, n: usize, model: &str) -> RoutingData {
    let mut few = data.clone();
    few.records.truncate(n);
    let (added, copied) = (
        few.model_index(ADDED).unwrap(),
        few.model_index(model).unwrap(),
    );
    for record in &mut few.records {
        record.scores[added] = record.scores[copied];
    }
    few
}

fn chosen(router: &Router, embeddings: &Tensor, alpha: f64) -> Vec<String> {
    let params = RouteParams {
        scoring: router.defaults.scoring.at_alpha(alpha),
        ..router.defaults
    };
    let routed = router.route(embeddings, &params).unwrap();
    (0..routed.len())
        .map(|i| router.models[routed.best(i)].clone())
        .collect()
}

#[test]
fn a_model_added_from_every_training_query_gets_the_statistics_training_with_it_gives() {
    let mut data = routerbench(600);
    // Every model answered every query: the added model's evaluated queries are then all of
    // each cluster's training queries, for every trained model too.
    data.records
        .retain(|record| record.scores.iter().all(Option::is_some));
    let embeddings = embed(&data);
    let full = fit(&data, &embeddings, 12, 2, 5.0);
    let without_data = without(&data, ADDED);
    let mut added = fit(&without_data, &embeddings, 12, 2, 5.0);
    assert!(!added.models.contains(&ADDED.to_string()));

    let names = added.add_models(&embeddings, &data, None).unwrap();
    assert_eq!(names, vec![ADDED.to_string()]);
    for model in &full.models {
        assert_eq!(cells(&added, model), cells(&full, model), "{model}");
    }
    // With the training means as they are (no shrinkage, whose centre differs for an added
    // model), it routes as the router trained with it.
    for alpha in [0.2, 0.5, 0.8] {
        let paper = |router: &Router| {
            let mut router = router.clone();
            router.defaults.prior_strength = 0.0;
            chosen(&router, &embeddings, alpha)
        };
        assert_eq!(paper(&added), paper(&full), "α = {alpha}");
    }
    // Adding it again is refused, naming the file.
    let error = added
        .add_models(&embeddings, &data, None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("in the router already"), "{error}");

    // Removing it gives back the router trained without it.
    let mut removed = full.clone();
    removed.remove_model(ADDED).unwrap();
    let without = fit(&without_data, &embeddings, 12, 2, 5.0);
    assert_eq!(removed.models, without.models);
    assert_eq!(removed.clusters, without.clusters);
    assert!(removed
        .remove_model("no-such-model")
        .unwrap_err()
        .to_string()
        .contains("no model `no-such-model`"));
}

#[test]
fn a_model_added_from_a_few_queries_takes_the_profile_of_the_trained_model_it_answers_like() {
    let data = routerbench(600);
    let embeddings = embed(&data);
    let without_data = without(&data, ADDED);
    let mut router = fit(&without_data, &embeddings, 24, 1, 5.0);
    let k = router.clusters_per_member();
    let trained: Vec<Vec<f64>> = (0..router.models.len())
        .map(|m| {
            (0..k)
                .map(|c| router.estimates(c, 5.0).accuracy[m].unwrap())
                .collect()
        })
        .collect();
    let pool: Vec<f64> = (0..k)
        .map(|c| trained.iter().map(|t| t[c]).sum::<f64>() / trained.len() as f64)
        .collect();
    let distance = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>();
    // The trained model that differs most from the pool's mean profile answers as the new
    // model, on the first 30 queries.
    let twin = (0..trained.len())
        .max_by(|&a, &b| distance(&trained[a], &pool).total_cmp(&distance(&trained[b], &pool)))
        .unwrap();
    let few = answering_as(&data, 30, &router.models[twin]);
    router
        .add_models(&embeddings.narrow(0, 0, 30).unwrap(), &few, None)
        .unwrap();
    let m = router.models.iter().position(|n| n == ADDED).unwrap();
    assert_eq!(
        router.clusters.iter().map(|c| c.count[m]).sum::<usize>(),
        30
    );

    // In the clusters it was not evaluated in, its estimates lie nearer its twin's than the
    // pool's mean does: its answers elsewhere told which model it resembles.
    let unseen: Vec<usize> = (0..k)
        .filter(|&c| router.clusters[c].count[m] == 0)
        .collect();
    assert!(!unseen.is_empty());
    let estimate: Vec<f64> = unseen
        .iter()
        .map(|&c| router.estimates(c, 5.0).accuracy[m].unwrap())
        .collect();
    let on = |profile: &[f64]| unseen.iter().map(|&c| profile[c]).collect::<Vec<f64>>();
    let (to_twin, pool_to_twin) = (
        distance(&estimate, &on(&trained[twin])),
        distance(&on(&pool), &on(&trained[twin])),
    );
    assert!(
        to_twin < 0.5 * pool_to_twin,
        "{to_twin} vs the pool's {pool_to_twin}"
    );
    // Its mean is its profile's, weighted by the clusters' sizes.
    let weighted = profile_mean(&router, m);
    let mean = router.priors().accuracy[m].unwrap();
    assert!((mean - weighted).abs() < 1e-9, "{mean} vs {weighted}");

    // Saved and loaded, the router says where the model came from and estimates the same.
    let dir = tempfile::tempdir().unwrap();
    router.save(dir.path()).unwrap();
    let loaded = Router::load(dir.path(), &candle_core::Device::Cpu).unwrap();
    assert_eq!(loaded.pool_changes(), router.pool_changes());
    assert_eq!(
        loaded.estimates(unseen[0], 5.0),
        router.estimates(unseen[0], 5.0)
    );
    let json = std::fs::read_to_string(dir.path().join("router.json")).unwrap();
    assert!(json.contains("\"change\": \"added\""), "{json}");
    assert!(json.contains("\"evaluations\": 30"), "{json}");
}

/// Added model `m`'s profile over the first k-means solution's clusters (each cluster's prior:
/// its estimate, at prior strength 5, with the model's answers there taken back out), weighted
/// by the clusters' sizes.
fn profile_mean(router: &Router, m: usize) -> f64 {
    let member = &router.clusters[..router.clusters_per_member()];
    let sizes: Vec<f64> = member.iter().map(|c| c.size as f64).collect();
    let weighted: f64 = member
        .iter()
        .enumerate()
        .map(|(c, stats)| {
            let (n, estimate) = (stats.count[m] as f64, router.estimates(c, 5.0).accuracy[m]);
            let prior =
                (estimate.unwrap() * (n + 5.0) - n * stats.accuracy[m].unwrap_or(0.0)) / 5.0;
            sizes[c] * prior
        })
        .sum();
    weighted / sizes.iter().sum::<f64>()
}

#[test]
fn a_declared_accuracy_sets_an_added_models_level_and_its_answers_where_it_is_strong() {
    let data = routerbench(600);
    let embeddings = embed(&data);
    let without_data = without(&data, ADDED);
    let router = fit(&without_data, &embeddings, 24, 1, 5.0);
    let k = router.clusters_per_member();
    // The new model answers the first 60 queries as the weakest trained model does.
    let means = router.priors().accuracy;
    let weakest = (0..router.models.len())
        .min_by(|&a, &b| means[a].unwrap().total_cmp(&means[b].unwrap()))
        .unwrap();
    let few = answering_as(&data, 60, &router.models[weakest]);
    let head = embeddings.narrow(0, 0, 60).unwrap();
    let add = |declared: Option<f64>| {
        let mut router = router.clone();
        router.add_models(&head, &few, declared).unwrap();
        router
    };
    let (answers_alone, declared) = (add(None), add(Some(0.9)));
    let m = router.models.len();
    // Its answers alone put it near the weakest model; declared at 0.9, its profile's mean over
    // the training queries is 0.9 exactly, and so is the mean routing shrinks toward.
    let alone = profile_mean(&answers_alone, m);
    assert!(alone < means[weakest].unwrap() + 0.1, "{alone}");
    let level = profile_mean(&declared, m);
    assert!((level - 0.9).abs() < 1e-6, "{level}");
    assert!((declared.priors().accuracy[m].unwrap() - 0.9).abs() < 1e-6);
    // Its answers still say where it is stronger and weaker: over the clusters, the declared
    // model's estimates move with those from its answers alone, far more than those of the
    // same accuracy declared without answers.
    let estimates = |router: &Router| -> Vec<f64> {
        (0..k)
            .map(|c| router.estimates(c, 5.0).accuracy[m].unwrap())
            .collect()
    };
    let mut prior_only = router.clone();
    let prior = ModelPrior {
        accuracy: 0.9,
        cost: Some(1e-4),
    };
    prior_only.add_model_on_prior(ADDED, prior).unwrap();
    let shaped = pearson(&estimates(&answers_alone), &estimates(&declared));
    let unshaped = pearson(&estimates(&answers_alone), &estimates(&prior_only));
    assert!(
        shaped > 0.8 && shaped > unshaped + 0.2,
        "{shaped} with answers, {unshaped} without"
    );
    assert!(declared.prior_only_models().is_empty());

    // router.json keeps the declared accuracy, without a cost: the answers carry those.
    let dir = tempfile::tempdir().unwrap();
    declared.save(dir.path()).unwrap();
    let loaded = Router::load(dir.path(), &candle_core::Device::Cpu).unwrap();
    assert_eq!(loaded.pool_changes(), declared.pool_changes());
    assert_eq!(estimates(&loaded), estimates(&declared));
    let json = std::fs::read_to_string(dir.path().join("router.json")).unwrap();
    assert!(
        json.contains("\"prior\": {\n        \"accuracy\": 0.9\n      }"),
        "{json}"
    );

    // A declared accuracy outside [0, 1], or records that add two models, are refused.
    let error = router
        .clone()
        .add_models(&head, &few, Some(1.5))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("--prior-accuracy must be in [0, 1], got 1.5"),
        "{error}"
    );
    let other = router.models[0].clone();
    let two = without(&without_data, &other);
    let mut without_two = fit(&two, &embeddings, 24, 1, 5.0);
    let before = without_two.clone();
    let error = without_two
        .add_models(&embeddings, &data, Some(0.5))
        .unwrap_err()
        .to_string();
    assert!(error.contains("these records add 2"), "{error}");
    assert!(error.contains(ADDED) && error.contains(&other), "{error}");
    assert_eq!(without_two.models, before.models);
}

/// The embedding model the router at `dir` was trained with.
fn loaded_router_model(dir: &Path) -> String {
    let router = Router::load(dir, &candle_core::Device::Cpu).unwrap();
    router.embedding.model.clone()
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mx, my) = (mean(x), mean(y));
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        xy += (a - mx) * (b - my);
        xx += (a - mx) * (a - mx);
        yy += (b - my) * (b - my);
    }
    xy / (xx * yy).sqrt()
}

#[test]
fn the_trained_models_scores_on_the_evaluated_queries_take_out_their_ease() {
    let data = routerbench(600);
    let embeddings = embed(&data);
    let without_data = without(&data, ADDED);
    let router = fit(&without_data, &embeddings, 12, 1, 5.0);
    let labels = router.assign(&embeddings).unwrap();
    let columns: Vec<usize> = router
        .models
        .iter()
        .map(|name| data.model_index(name).unwrap())
        .collect();
    // How much better the trained models did on a query than in its cluster on average.
    let ease = |i: usize| {
        let cluster = &router.clusters[labels[i][0] as usize];
        columns
            .iter()
            .enumerate()
            .filter_map(|(m, &j)| Some(data.records[i].scores[j]? - cluster.accuracy[m]?))
            .sum::<f64>()
    };
    let first = |n: usize, keep: &dyn Fn(f64) -> bool| -> Vec<usize> {
        (0..data.records.len())
            .filter(|&i| keep(ease(i)))
            .take(n)
            .collect()
    };
    // Three quarters of the evaluated queries are easier than their cluster's mean.
    let evaluated = [first(60, &|e| e > 0.0), first(20, &|e| e <= 0.0)].concat();
    let rows = Tensor::new(
        evaluated.iter().map(|&i| i as u32).collect::<Vec<u32>>(),
        embeddings.device(),
    )
    .unwrap();
    let probe_embeddings = embeddings.index_select(&rows, 0).unwrap();
    let added_mean = |probe: &RoutingData| {
        let mut router = router.clone();
        router.add_models(&probe_embeddings, probe, None).unwrap();
        let m = router.models.iter().position(|n| n == ADDED).unwrap();
        router.priors().accuracy[m].unwrap()
    };
    // Each trained model in turn answers as the new model: evaluated on those queries alone
    // it looks stronger than it is; with the trained models' scores on them beside its own,
    // most of that is taken out.
    let (mut alone_error, mut paired_error) = (0.0, 0.0);
    for (twin, &column) in columns.iter().enumerate() {
        let mut probe = data.clone();
        probe.records = evaluated.iter().map(|&i| data.records[i].clone()).collect();
        let added = probe.model_index(ADDED).unwrap();
        for record in &mut probe.records {
            record.scores[added] = record.scores[column];
            record.costs[added] = record.costs[column];
        }
        let mut alone = probe.clone();
        alone.exclude_models(&router.models).unwrap();
        let truth = router.priors().accuracy[twin].unwrap();
        let (from_alone, paired) = (added_mean(&alone), added_mean(&probe));
        assert!(
            from_alone > truth,
            "{}: {from_alone} vs {truth}",
            router.models[twin]
        );
        alone_error += from_alone - truth;
        paired_error += (paired - truth).abs();
    }
    let models = columns.len() as f64;
    assert!(alone_error / models > 0.03, "{alone_error}");
    assert!(
        paired_error < 0.6 * alone_error,
        "mean error {} with the trained models' scores, {} without",
        paired_error / models,
        alone_error / models
    );
}

#[test]
fn a_model_enters_on_a_declared_prior_and_the_paper_estimator_refuses_it() {
    let data = routerbench(400);
    let embeddings = embed(&data);
    let mut router = fit(&data, &embeddings, 8, 1, 5.0);
    // A model declared perfect and free wins every query.
    let perfect = ModelPrior {
        accuracy: 1.0,
        cost: Some(0.0),
    };
    let mut declared = router.clone();
    router.add_model_on_prior("perfect-llm", perfect).unwrap();
    assert_eq!(router.prior_only_models(), vec!["perfect-llm"]);
    // A declared mean within reach is met exactly by the model's profile over the clusters.
    let middling = ModelPrior {
        accuracy: 0.6,
        cost: Some(1e-4),
    };
    declared
        .add_model_on_prior("middling-llm", middling)
        .unwrap();
    let m = declared.models.len() - 1;
    let sizes: Vec<f64> = declared.clusters.iter().map(|c| c.size as f64).collect();
    let profile_mean = (0..declared.clusters.len())
        .map(|c| sizes[c] * declared.estimates(c, 5.0).accuracy[m].unwrap())
        .sum::<f64>()
        / sizes.iter().sum::<f64>();
    assert!((profile_mean - 0.6).abs() < 1e-6, "{profile_mean}");
    assert!((declared.priors().accuracy[m].unwrap() - 0.6).abs() < 1e-6);
    assert!(chosen(&router, &embeddings, 0.5)
        .iter()
        .all(|m| m == "perfect-llm"));
    let routed = router.route(&embeddings.narrow(0, 0, 1).unwrap(), &router.defaults);
    let explained = router.decision_json(&routed.unwrap(), 0, &router.defaults, None, true);
    assert_eq!(explained["prior_only"], serde_json::json!(["perfect-llm"]));

    let dir = tempfile::tempdir().unwrap();
    router.save(dir.path()).unwrap();
    let loaded = Router::load(dir.path(), &candle_core::Device::Cpu).unwrap();
    assert_eq!(loaded.prior_only_models(), vec!["perfect-llm"]);

    let mut paper = fit(&data, &embeddings, 8, 1, 0.0);
    let error = paper
        .add_model_on_prior("perfect-llm", perfect)
        .unwrap_err()
        .to_string();
    assert!(error.contains("prior strength is 0"), "{error}");
}

/// The MMLU-Pro sample's records with `model`'s costs recomputed from its token counts at
/// `price`, as records priced that way from the start would be.
fn repriced_records(model: &str, price: &Price, dir: &Path) -> RoutingData {
    let source = common::fixture_path("mmlupro-sample.jsonl.gz");
    let text = {
        use std::io::Read;
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&source).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    let mut out = String::new();
    for line in text.lines() {
        let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(usage) = record["usages"].get_mut(model) {
            let prompt = usage["prompt_tokens_est"].as_f64().unwrap();
            let completion = usage["completion_tokens_est"].as_f64().unwrap();
            usage["cost"] = serde_json::json!(price.of_tokens([prompt, completion]));
        }
        out.push_str(&record.to_string());
        out.push('\n');
    }
    let path = dir.join("repriced.jsonl");
    std::fs::write(&path, out).unwrap();
    RoutingData::read(&path, MissingCost::Zero).unwrap()
}

#[test]
fn repricing_from_token_counts_matches_training_on_repriced_records() {
    let source = common::fixture_path("mmlupro-sample.jsonl.gz");
    let data = RoutingData::read(&source, MissingCost::Zero).unwrap();
    let embeddings = embed(&data);
    let router = fit(&data, &embeddings, 8, 2, 5.0);
    assert_eq!(router.models_with_tokens().len(), data.models.len());
    let model = "gemini-1.5-pro-002";
    let dir = tempfile::tempdir().unwrap();
    for factor in [0.5, 2.0] {
        // The model's list price, scaled.
        let price = Price {
            input_per_mtok: 1.25 * factor,
            output_per_mtok: 5.0 * factor,
        };
        let mut repriced = router.clone();
        let report = repriced
            .reprice(&BTreeMap::from([(model.to_string(), price)]))
            .unwrap();
        assert_eq!(report[0].cells_without_tokens, 0);
        assert_eq!(report[0].cells, router.clusters.len());
        let retrained = fit(
            &repriced_records(model, &price, dir.path()),
            &embeddings,
            8,
            2,
            5.0,
        );
        for (a, b) in repriced.clusters.iter().zip(&retrained.clusters) {
            for (x, y) in a.cost.iter().zip(&b.cost) {
                let (x, y) = (x.unwrap(), y.unwrap());
                assert!((x - y).abs() <= 1e-9 * y.max(1e-12), "{x} vs {y}");
            }
        }
        for alpha in [0.3, 0.6, 0.9] {
            assert_eq!(
                chosen(&repriced, &embeddings, alpha),
                chosen(&retrained, &embeddings, alpha),
                "×{factor} at α = {alpha}"
            );
        }
    }
    // kroute.toml: a model block's price reprices routing as `kroute reprice` does; the
    // default block's price only counts spend.
    let config = format!(
        "[upstream.default]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         price = {{ input_per_mtok = 9.0, output_per_mtok = 9.0 }}\n\
         [upstream.\"{model}\"]\nprice = {{ input_per_mtok = 0.625, output_per_mtok = 2.5 }}\n"
    );
    let config = kroute::serve::ServeConfig::parse(
        &config,
        Path::new("kroute.toml"),
        &router.models,
        router.defaults,
        |_| None,
    )
    .unwrap();
    assert_eq!(config.model_prices.keys().collect::<Vec<_>>(), vec![model]);
    let mut served = router.clone();
    config.reprice(&mut served).unwrap();
    let mut direct = router.clone();
    let half = Price {
        input_per_mtok: 0.625,
        output_per_mtok: 2.5,
    };
    direct
        .reprice(&BTreeMap::from([(model.to_string(), half)]))
        .unwrap();
    assert_eq!(served.clusters, direct.clusters);
    assert_ne!(served.clusters, router.clusters);

    // A router without token counts cannot be repriced, and says why.
    let bench = routerbench(300);
    let mut plain = fit(&bench, &embed(&bench), 6, 1, 5.0);
    let price = Price {
        input_per_mtok: 1.0,
        output_per_mtok: 1.0,
    };
    let error = plain
        .reprice(&BTreeMap::from([(ADDED.to_string(), price)]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("no token counts"), "{error}");
}

#[test]
fn suggestions_spread_over_the_clusters_nearest_first_and_do_not_depend_on_n() {
    let data = routerbench(800);
    let embeddings = embed(&data);
    let router = fit(&data, &embeddings, 10, 1, 5.0);
    let n = 40;
    let picked = router.suggest(&embeddings, n).unwrap();
    assert_eq!(picked.len(), n);
    let mut distinct = picked.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), n);
    assert_eq!(router.suggest(&embeddings, 15).unwrap(), picked[..15]);

    let labels = router.assign(&embeddings).unwrap();
    // A second answer in a cluster tells less than a first: the first ten spread out.
    let mut first_ten: Vec<u32> = picked[..10].iter().map(|&i| labels[i][0]).collect();
    first_ten.sort();
    first_ten.dedup();
    assert!(first_ten.len() >= 6, "{first_ten:?}");
    for c in 0..router.clusters.len() {
        // Nearest to the centroid first (with one k-means solution, a cluster's queries
        // tell alike).
        let members: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i][0] as usize == c)
            .collect();
        if let Some(&first) = picked.iter().find(|&&i| labels[i][0] as usize == c) {
            let centroid = router.centroids.get(c).unwrap();
            let distance = |i: usize| -> f32 {
                let row = embeddings.get(i).unwrap();
                (row - &centroid)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap()
            };
            let nearest = members
                .iter()
                .map(|&i| distance(i))
                .fold(f32::INFINITY, f32::min);
            assert!(distance(first) <= nearest + 1e-5, "cluster {c}");
        }
    }
    // More than there are queries: every query, once.
    assert_eq!(router.suggest(&embeddings, 10_000).unwrap().len(), 800);
}

#[test]
fn the_cli_suggests_adds_removes_and_reprices() {
    let dir = tempfile::tempdir().unwrap();
    let sample = common::bundled_sample(dir.path(), 300, false);
    let router = dir.path().join("router");
    let (ok, log) = common::run(&[
        "train",
        sample.to_str().unwrap(),
        "-o",
        router.to_str().unwrap(),
        "--clusters",
        "6",
        "--bag",
        "1",
        "--exclude-models",
        ADDED,
        "--quiet",
    ]);
    assert!(ok, "{log}");

    // `kroute suggest ROUTER --n N --from SAMPLE -o OUTPUT`: (succeeded, its output).
    let suggest = |router: &std::path::Path, n: usize, output: &std::path::Path| {
        common::run(&[
            "suggest",
            router.to_str().unwrap(),
            "--n",
            &n.to_string(),
            "--from",
            sample.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--quiet",
        ])
    };
    let probe = dir.path().join("probe.jsonl");
    let (ok, log) = suggest(&router, 20, &probe);
    assert!(ok, "{log}");
    let probe_text = std::fs::read_to_string(&probe).unwrap();
    let sample_text = std::fs::read_to_string(&sample).unwrap();
    assert_eq!(probe_text.lines().count(), 20);
    assert!(probe_text.lines().all(|l| sample_text.contains(l)));

    let added = dir.path().join("added");
    // The embedding model named in the environment, as every embedding command reads it, is
    // not the model to add.
    let out = common::kroute_bin()
        .args([
            "add-model",
            router.to_str().unwrap(),
            "--records",
            probe.to_str().unwrap(),
            "-o",
            added.to_str().unwrap(),
            "--quiet",
        ])
        .env("KROUTE_MODEL", loaded_router_model(&router))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(&format!("\"added\":[\"{ADDED}\"]")), "{log}");
    let loaded = Router::load(&added, &candle_core::Device::Cpu).unwrap();
    assert!(loaded.models.contains(&ADDED.to_string()));

    let on_prior = dir.path().join("on-prior");
    let (ok, log) = common::run(&[
        "add-model",
        router.to_str().unwrap(),
        "--name",
        "declared-llm",
        "--prior-accuracy",
        "0.7",
        "--prior-cost",
        "0.002",
        "-o",
        on_prior.to_str().unwrap(),
    ]);
    assert!(ok, "{log}");
    let on_prior = Router::load(&on_prior, &candle_core::Device::Cpu).unwrap();
    assert_eq!(on_prior.prior_only_models(), vec!["declared-llm"]);
    // A declared accuracy beside the answers must be a score; their costs are the answers'.
    let declared = dir.path().join("declared");
    for (flag, value, message) in [
        (
            "--prior-accuracy",
            "1.5",
            "--prior-accuracy must be in [0, 1], got 1.5",
        ),
        (
            "--prior-cost",
            "0.01",
            "cannot be used with '--prior-cost <PRIOR_COST>'",
        ),
    ] {
        let (ok, log) = common::run(&[
            "add-model",
            router.to_str().unwrap(),
            "--records",
            probe.to_str().unwrap(),
            flag,
            value,
            "-o",
            declared.to_str().unwrap(),
            "--quiet",
        ]);
        assert!(!ok && log.contains(message), "{log}");
        assert!(!declared.exists());
    }

    // A router whose models all came in after training has none to compare a new one with:
    // refused, naming the router, and nothing written.
    let mut only_added = loaded.clone();
    for model in loaded.models.iter().filter(|m| *m != ADDED) {
        only_added.remove_model(model).unwrap();
    }
    let lonely = dir.path().join("only-added");
    only_added.save(&lonely).unwrap();
    let lonely_probe = dir.path().join("lonely-probe.jsonl");
    let (ok, log) = suggest(&lonely, 5, &lonely_probe);
    assert!(!ok);
    assert!(
        log.contains(&format!("{}: ", lonely.display())) && log.contains("no trained model"),
        "{log}"
    );
    assert!(!lonely_probe.exists());

    let removed = dir.path().join("removed");
    let (ok, log) = common::run(&[
        "remove-model",
        added.to_str().unwrap(),
        ADDED,
        "-o",
        removed.to_str().unwrap(),
    ]);
    assert!(ok, "{log}");
    let removed = Router::load(&removed, &candle_core::Device::Cpu).unwrap();
    assert!(!removed.models.contains(&ADDED.to_string()));

    // Prices for a router trained without token counts: refused, naming the model.
    let prices = dir.path().join("prices.toml");
    std::fs::write(
        &prices,
        "\"mistralai/mixtral-8x7b-chat\" = { input_per_mtok = 1.0, output_per_mtok = 2.0 }\n",
    )
    .unwrap();
    let out = dir.path().join("repriced");
    let (ok, log) = common::run(&[
        "reprice",
        router.to_str().unwrap(),
        prices.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        log.contains("no token counts for `mistralai/mixtral-8x7b-chat`"),
        "{log}"
    );
    assert!(!out.exists());
    // A malformed prices file names the file and the model.
    std::fs::write(
        &prices,
        "\"m\" = { input_per_mtok = -1.0, output_per_mtok = 2.0 }\n",
    )
    .unwrap();
    let (ok, log) = common::run(&[
        "reprice",
        router.to_str().unwrap(),
        prices.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        log.contains("prices.toml") && log.contains("input_per_mtok"),
        "{log}"
    );
}
