//! A router that learns after training, in the library and through `kroute update`: how an
//! outcome moves a cell, that it can change the next decision, forgetting, exploration, the
//! learned statistics in the router directory, and the state directory's log and snapshots.

mod common;

use candle_core::Device;
use common::serve::{fixture, load_router};
use common::{files_in, run};
use kroute::router::{
    logit_shift, shift_accuracy, Exploration, Observation, RouteParams, Router,
    CHANGE_WORTH_FINDING, OPTIMISM, SHIFT_SIGNIFICANCE, SHIFT_SPREAD, VARIANCE_PRIOR,
};
use kroute::state::wal::WalWriter;
use kroute::state::{clusters_id, FeedbackRecord, ServerState, StateDir};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn params() -> RouteParams {
    load_router().defaults
}

/// The router's decision (best model) for `text`.
fn best(router: &Router, text: &str) -> usize {
    let routed = router
        .route(&fixture().embedder.embed(&[text]).unwrap(), &params())
        .unwrap();
    routed.best(0)
}

/// The outcome `score` of `model` on `text`, as routing `router` gives its clusters.
fn outcome(router: &Router, text: &str, model: usize, score: f64) -> Observation {
    let routed = router
        .route(&fixture().embedder.embed(&[text]).unwrap(), &params())
        .unwrap();
    Router::observation(&routed, 0, model, score, None)
}

/// Whether outcomes of mean `outcome`, of total weight `weight`, stand SHIFT_SIGNIFICANCE
/// standard errors out of a cell's `answers` training answers at mean `trained`, each seen with
/// the variance of one answer there (kept off zero).
fn stands_out(outcome: f64, weight: f64, answers: f64, trained: f64) -> bool {
    let p = trained.clamp(0.05, 0.95);
    let error = (p * (1.0 - p) * (1.0 / weight + 1.0 / answers.max(1.0))).sqrt();
    weight > 0.0 && (outcome - trained).abs() >= SHIFT_SIGNIFICANCE * error
}

#[test]
fn an_outcome_moves_each_voting_cell_by_its_vote_weight_and_the_model_by_its_shift() {
    let mut router = load_router();
    let text = &fixture().queries[0];
    let model = 2;
    let observation = outcome(&router, text, model, 0.0);
    let trained = router.clone();
    // Returns how many cells took the outcomes in.
    let check = |router: &Router, outcomes: f64| -> usize {
        let mut moved = 0;
        for (cluster, stats) in router.clusters.iter().enumerate() {
            // The paper's estimator (prior strength 0), bag 1: (n·mean + Σw·score) / (n + Σw)
            // once the outcomes (all 0) stand SHIFT_SIGNIFICANCE standard errors out of the
            // training mean, each seen with the variance of one answer there; a cluster that
            // did not vote, or whose outcomes do not stand out, stays as trained.
            let n = stats.count[model] as f64;
            let w = outcomes
                * observation
                    .votes
                    .iter()
                    .find(|v| v.0 as usize == cluster)
                    .map_or(0.0, |v| v.1 as f64);
            let mean = stats.accuracy[model];
            let expected = match mean.is_some_and(|mean| stands_out(0.0, w, n, mean)) {
                true => {
                    moved += 1;
                    Some(n * mean.unwrap_or(0.0) / (n + w))
                }
                false => mean,
            };
            let estimates = router.estimates(cluster, 0.0);
            match (estimates.accuracy[model], expected) {
                (Some(got), Some(expected)) => assert!(
                    (got - expected).abs() < 1e-9,
                    "cluster {cluster}: {got} vs {expected}"
                ),
                (got, expected) => assert_eq!(got, expected, "cluster {cluster}"),
            }
            // Costs were not observed; other models did not move.
            assert_eq!(estimates.cost, stats.cost);
            assert_eq!(estimates.accuracy[model + 1], stats.accuracy[model + 1]);
        }
        moved
    };
    router.observe(&observation, None).unwrap();
    assert_eq!(router.learned().observations, 1);
    // One outcome moves neither the model nor, split over the voting cells, any cell: it does
    // not stand out of the noise.
    assert_eq!(router.learned().shift(model).0, 0.0);
    assert_eq!(check(&router, 1.0), 0);

    // Thirty more of the same: the shift is the residuals' posterior mean, now that it stands
    // SHIFT_SIGNIFICANCE standard errors out of the noise. Identical residuals have no spread:
    // their variance is the prior's pseudo-residuals' alone.
    for _ in 0..30 {
        router.observe(&observation, None).unwrap();
    }
    let (sum, weight) = observation
        .votes
        .iter()
        .filter_map(|&(c, w)| {
            Some((
                w as f64 * trained.clusters[c as usize].accuracy[model]?,
                w as f64,
            ))
        })
        .fold((0.0, 0.0), |(s, n), (x, w)| (s + x, n + w));
    let expected = sum / weight;
    let variance = VARIANCE_PRIOR * 0.25 / (31.0 + VARIANCE_PRIOR);
    let n = 31.0 + variance / (SHIFT_SPREAD * SHIFT_SPREAD);
    let delta = 31.0 * (0.0 - expected) / n;
    assert!(
        delta < -SHIFT_SIGNIFICANCE * (variance / n).sqrt(),
        "{delta}"
    );
    // Applied as the change of log-odds that moves the expected accuracy by δ.
    let shift = logit_shift(expected, delta);
    assert!((router.learned().shift(model).0 - shift).abs() < 1e-12);
    // From then on the model is learned again from its outcomes (the next tests say where that
    // puts it): at prior strength 0 a voting cell is its outcomes' mean.
    for &(cluster, _) in &observation.votes {
        assert_eq!(
            router.estimates(cluster as usize, 0.0).accuracy[model],
            Some(0.0)
        );
    }
}

#[test]
fn a_cell_takes_its_outcomes_in_once_they_stand_out_of_its_training_answers() {
    let mut router = load_router();
    let trained = router.clone();
    // Per model, its best and worst cell among those with at least 5 answers; the model whose
    // cells lie furthest apart.
    let extremes = |m: usize| {
        let mut answered: Vec<(f64, usize)> = (0..trained.clusters.len())
            .filter(|&c| trained.clusters[c].count[m] >= 5)
            .map(|c| (trained.clusters[c].accuracy[m].unwrap(), c))
            .collect();
        answered.sort_by(|a, b| a.0.total_cmp(&b.0));
        (answered[answered.len() - 1], answered[0])
    };
    let model = (0..trained.models.len())
        .max_by(|&a, &b| {
            let spread = |m| {
                let ((high, _), (low, _)) = extremes(m);
                high - low
            };
            spread(a).total_cmp(&spread(b))
        })
        .unwrap();
    let ((_, high), (_, low)) = extremes(model);
    let mean = |c: usize| trained.clusters[c].accuracy[model].unwrap();
    assert!(
        mean(high) > 0.7 && mean(low) < 0.4,
        "{} {}",
        mean(high),
        mean(low)
    );
    let observe = |router: &mut Router, cluster: usize, score: f64| {
        let observation = Observation {
            votes: vec![(cluster as u32, 1.0)],
            model,
            score,
            cost: None,
        };
        router.observe(&observation, None).unwrap();
    };
    // Outcomes against each cell's training mean, 0 where it was high and 1 where it was low:
    // their residuals cancel, so the model does not shift, and each cell moves on its own
    // once its outcomes stand out of its answers (the paper's estimator, prior strength 0).
    let estimate = |router: &Router, c: usize| router.estimates(c, 0.0).accuracy[model].unwrap();
    let count = |c: usize| trained.clusters[c].count[model] as f64;
    let (mut held, mut taken) = (0, 0);
    for outcomes in 1..=10 {
        observe(&mut router, high, 0.0);
        observe(&mut router, low, 1.0);
        assert_eq!(router.learned().shift(model).0, 0.0);
        for (c, score) in [(high, 0.0), (low, 1.0)] {
            let k = outcomes as f64;
            let n = count(c);
            let expected = match stands_out(score, k, n, mean(c)) {
                true => {
                    taken += 1;
                    (n * mean(c) + k * score) / (n + k)
                }
                false => {
                    held += 1;
                    mean(c)
                }
            };
            assert!(
                (estimate(&router, c) - expected).abs() < 1e-9,
                "cluster {c} after {k}"
            );
        }
    }
    // Both branches were taken: the first outcomes held back, the later ones counted.
    assert!(held > 0 && taken > 0, "held {held}, taken {taken}");
    assert!(stands_out(0.0, 10.0, count(high), mean(high)));
    assert!(stands_out(1.0, 10.0, count(low), mean(low)));
}

#[test]
fn a_bad_outcome_for_the_chosen_model_changes_a_close_decision_and_a_good_one_does_not() {
    let router = load_router();
    // A held-out query whose choice flips after one outcome of 0 for the chosen model.
    let flips = fixture().queries.iter().find_map(|text| {
        let chosen = best(&router, text);
        let mut learned = router.clone();
        learned
            .observe(&outcome(&router, text, chosen, 0.0), None)
            .unwrap();
        (best(&learned, text) != chosen).then_some((text, chosen))
    });
    let (text, chosen) = flips.expect("some decision is close enough to flip");
    // The same outcome at score 1 confirms the choice instead.
    let mut confirmed = router.clone();
    confirmed
        .observe(&outcome(&router, text, chosen, 1.0), None)
        .unwrap();
    assert_eq!(best(&confirmed, text), chosen);
    // A near-identical query (one more word) follows the learned cell too.
    let mut learned = router.clone();
    learned
        .observe(&outcome(&router, text, chosen, 0.0), None)
        .unwrap();
    let near = format!("{text} please");
    if best(&router, &near) == chosen {
        assert_ne!(best(&learned, &near), chosen, "{near}");
    }
}

#[test]
fn a_half_life_follows_a_model_that_got_worse() {
    let text = &fixture().queries[1];
    let router = load_router();
    let model = best(&router, text);
    let observation = outcome(&router, text, model, 0.0);
    let nearest = observation.votes[0].0 as usize;
    let trained = router.clusters[nearest].accuracy[model].unwrap();
    assert!(trained > 0.2, "a model with something to lose: {trained}");
    let cell = |half_life: Option<f64>| {
        let mut router = router.clone();
        for _ in 0..60 {
            router.observe(&observation, half_life).unwrap();
        }
        router.learned().cells()[nearest * router.models.len() + model].accuracy
    };
    let n = router.clusters[nearest].count[model] as f64;
    let remembered = cell(None);
    let forgotten = cell(Some(5.0));
    // Without forgetting, the training answers still weigh fully; with a half-life of 5
    // outcomes the cell has all but forgotten them: 2^(−Σw/5).
    assert_eq!(remembered.kept, 1.0);
    let weight: f64 = 60.0 * observation.votes[0].1 as f64;
    assert!((forgotten.kept - 0.5f64.powf(weight / 5.0)).abs() < 1e-9);
    let mean = |e: kroute::router::Evidence| e.combine(n, Some(trained)).1.unwrap();
    assert!(mean(remembered) > 0.02, "{}", mean(remembered));
    assert!(mean(forgotten) < mean(remembered) / 4.0);
}

#[test]
fn a_model_that_changed_into_another_is_learned_again_from_its_outcomes() {
    // The weakest model starts answering every training query as the strongest does. A shift
    // would move its old profile's log-odds; learned again, its accuracy per cluster follows the
    // strongest model's profile, which its outcomes resemble, in every cluster.
    let dir = tempfile::tempdir().unwrap();
    let data = kroute::records::RoutingData::read(
        &common::bundled_sample(dir.path(), 300, true),
        kroute::records::MissingCost::Error,
    )
    .unwrap();
    let trained = load_router();
    let priors = trained.priors();
    let by_accuracy = |m: &usize| priors.accuracy[*m].unwrap_or(0.0);
    let models = 0..trained.models.len();
    let weak = models
        .clone()
        .min_by(|a, b| by_accuracy(a).total_cmp(&by_accuracy(b)))
        .unwrap();
    let strong = models
        .max_by(|a, b| by_accuracy(a).total_cmp(&by_accuracy(b)))
        .unwrap();
    let column = |name: &str| data.models.iter().position(|m| m == name).unwrap();
    let (weak_column, strong_column) = (
        column(&trained.models[weak]),
        column(&trained.models[strong]),
    );
    let answered: Vec<usize> = (0..data.records.len())
        .filter(|&i| data.records[i].scores[weak_column].is_some())
        .collect();
    let texts: Vec<&str> = answered
        .iter()
        .map(|&i| data.records[i].query.as_str())
        .collect();
    let outcomes: Vec<Vec<(usize, f64, Option<f64>)>> = answered
        .iter()
        .map(|&i| {
            vec![(
                weak,
                data.records[i].scores[strong_column].unwrap_or(0.0),
                None,
            )]
        })
        .collect();
    let mut router = trained.clone();
    let embeddings = fixture().embedder.embed(&texts).unwrap();
    router
        .observe_queries(&embeddings, &outcomes, &params(), None, "test")
        .unwrap();
    let shift = router.learned().shift(weak).0;
    assert!(shift > 0.0, "the weak model got better: {shift}");

    let strength = params().prior_strength;
    let mut distance = (0.0, 0.0, 0.0); // before, shifted, learned again
    for cluster in 0..trained.clusters.len() {
        let before = trained.estimates(cluster, strength).accuracy;
        let target = before[strong].unwrap();
        let old = before[weak].unwrap();
        let relearned = router.estimates(cluster, strength).accuracy[weak].unwrap();
        distance.0 += (old - target).abs();
        distance.1 += (shift_accuracy(old, shift) - target).abs();
        distance.2 += (relearned - target).abs();
        // The other models are as trained.
        assert_eq!(
            router.estimates(cluster, strength).accuracy[strong],
            Some(target)
        );
    }
    assert!(
        distance.2 < 0.8 * distance.1 && distance.1 < distance.0,
        "summed distance to the strong model's profile: before {:.3}, shifted {:.3}, learned again {:.3}",
        distance.0,
        distance.1,
        distance.2
    );
}

#[test]
fn learned_statistics_survive_the_router_directory() {
    let mut router = load_router();
    let texts = &fixture().queries[..20];
    let embeddings = fixture().embedder.embed(texts).unwrap();
    let outcomes: Vec<Vec<(usize, f64, Option<f64>)>> = (0..texts.len())
        .map(|i| {
            vec![(
                i % router.models.len(),
                (i % 2) as f64,
                Some(0.001 * i as f64),
            )]
        })
        .collect();
    let taken = router
        .observe_queries(
            &embeddings,
            &outcomes,
            &params(),
            Some(50.0),
            "judged.jsonl",
        )
        .unwrap();
    assert_eq!(taken, 20);
    let dir = tempfile::tempdir().unwrap();
    router.save(&dir.path().join("learned")).unwrap();
    let loaded = Router::load(&dir.path().join("learned"), &Device::Cpu).unwrap();
    assert!(loaded.learned() == router.learned());
    assert_eq!(loaded.learned().sources[0].source, "judged.jsonl");
    assert_eq!(loaded.learned().sources[0].half_life, Some(50.0));
    let test = fixture()
        .embedder
        .embed(&fixture().queries[20..60])
        .unwrap();
    for alpha in [0.0, 0.5, 1.0] {
        let params = RouteParams {
            scoring: params().scoring.at_alpha(alpha),
            ..params()
        };
        assert_eq!(
            router.route(&test, &params).unwrap().totals,
            loaded.route(&test, &params).unwrap().totals
        );
    }
    // The routing table follows new outcomes incrementally: the same as building it afresh.
    let mut incremental = loaded.clone();
    incremental.route(&test, &params()).unwrap();
    incremental
        .observe(&outcome(&incremental, &fixture().queries[70], 1, 1.0), None)
        .unwrap();
    let mut fresh = loaded.clone();
    fresh
        .observe(&outcome(&fresh, &fixture().queries[70], 1, 1.0), None)
        .unwrap();
    assert_eq!(
        incremental.route(&test, &params()).unwrap().totals,
        fresh.route(&test, &params()).unwrap().totals
    );
    // And on through a model's shift applying and its profile learned again after it, with
    // another model's outcomes between (a clone starts without tables).
    for step in 0..40 {
        let (model, score) = match step % 4 {
            3 => (2, 1.0),
            _ => (0, 0.0),
        };
        let query = &fixture().queries[60 + step % 30];
        incremental
            .observe(&outcome(&incremental, query, model, score), None)
            .unwrap();
        assert_eq!(
            incremental.route(&test, &params()).unwrap().totals,
            incremental.clone().route(&test, &params()).unwrap().totals,
            "after outcome {step}"
        );
    }
    assert!(incremental.learned().shift(0).0 < 0.0);
}

#[test]
fn exploration_leaves_the_greedy_choice_as_the_policy_says() {
    let router = load_router();
    let texts = &fixture().queries[..60];
    let routed = router
        .route(&fixture().embedder.embed(texts).unwrap(), &params())
        .unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let explored = |policy: Exploration, rng: &mut StdRng| {
        (0..texts.len())
            .filter_map(|i| {
                router
                    .explore(&routed, i, &params(), policy, rng)
                    .map(|r| (i, r))
            })
            .collect::<Vec<_>>()
    };
    assert!(explored(Exploration::Off, &mut rng).is_empty());
    assert!(explored(Exploration::Epsilon(0.0), &mut rng).is_empty());
    let always = explored(Exploration::Epsilon(1.0), &mut rng);
    assert_eq!(always.len(), texts.len());
    for (i, ranking) in &always {
        // Another model first, then the greedy order for fallbacks: every model once.
        assert_ne!(ranking[0].0, routed.best(*i));
        let mut models: Vec<usize> = ranking.iter().map(|r| r.0).collect();
        models.sort();
        assert_eq!(models, (0..router.models.len()).collect::<Vec<_>>());
    }
    // Thompson sampling leaves the greedy choice only now and then: where the posteriors of
    // the leading models overlap.
    let thompson = explored(Exploration::Thompson, &mut rng).len();
    assert!(thompson > 0 && thompson < texts.len(), "{thompson}");
    // Optimism lifts a model by what its outcomes still allow: one observed often, with
    // outcomes as training expected, gets a smaller lift than the others, which then win
    // some decisions they lose greedily.
    let text = &fixture().queries[0];
    let observed = best(&router, text);
    let mut learner = router.clone();
    let expected = outcome(&learner, text, observed, 0.0);
    let trained: f64 = expected
        .votes
        .iter()
        .map(|&(c, w)| w as f64 * router.clusters[c as usize].accuracy[observed].unwrap_or(0.0))
        .sum();
    for _ in 0..40 {
        learner
            .observe(&outcome(&learner, text, observed, trained), None)
            .unwrap();
    }
    let (applied, mean, error) = learner.learned().shift(observed);
    assert_eq!(applied, 0.0);
    assert!(mean.abs() < 0.05 && error < learner.learned().shift(1 - observed.min(1)).2);
    let routed = learner
        .route(&fixture().embedder.embed(texts).unwrap(), &params())
        .unwrap();
    let optimistic: Vec<_> = (0..texts.len())
        .filter_map(|i| learner.explore(&routed, i, &params(), Exploration::Optimistic, &mut rng))
        .collect();
    assert!(!optimistic.is_empty());
    assert!(optimistic.iter().any(|r| r[0].0 != observed));
    let policy = |s: &str| s.parse::<Exploration>().map_err(|e| e.to_string());
    assert_eq!(policy("optimistic"), Ok(Exploration::Optimistic));
    assert_eq!(policy("screen"), Ok(Exploration::Screen(None)));
    assert_eq!(policy("screen:4"), Ok(Exploration::Screen(Some(4.0))));
    assert_eq!(Exploration::Screen(Some(4.0)).to_string(), "screen:4");
    assert_eq!(Exploration::Screen(None).to_string(), "screen");
    assert!(policy("screen:1").unwrap_err().contains("screen:R"));
    assert_eq!(policy("epsilon:0.05"), Ok(Exploration::Epsilon(0.05)));
    assert!(policy("epsilon:2").unwrap_err().contains("epsilon:E"));
}

#[test]
fn screening_looks_at_each_model_until_its_outcomes_rule_out_or_find_a_change_worth_finding() {
    let mut router = load_router();
    let texts = &fixture().queries;
    let embeddings = fixture().embedder.embed(texts).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    // What an unchanged model's outcomes on query `i` average: the vote-weighted mean of its
    // training answers in each voting cluster (the shrunk training estimate where it has none).
    let untouched = load_router();
    let trained = |router: &Router, i: usize, model: usize| -> f64 {
        outcome(router, &texts[i], model, 0.0)
            .votes
            .iter()
            .map(|&(c, w)| {
                let stats = &untouched.clusters[c as usize];
                let accuracy = match stats.count[model] > 0 {
                    true => stats.accuracy[model],
                    false => {
                        let prior_strength = params().prior_strength;
                        untouched.estimates(c as usize, prior_strength).accuracy[model]
                    }
                };
                w as f64 * accuracy.unwrap()
            })
            .sum()
    };
    let screened = |router: &Router, rng: &mut StdRng, odds: Option<f64>| {
        let routed = router.route(&embeddings, &params()).unwrap();
        (0..texts.len())
            .filter_map(|i| {
                let ranking = router.explore(&routed, i, &params(), Exploration::Screen(odds), rng);
                ranking.map(|r| (i, r[0].0))
            })
            .collect::<Vec<(usize, usize)>>()
    };
    let explorations = |router: &Router, rng: &mut StdRng| screened(router, rng, None);
    // Every model may have improved: each is explored, and its outcomes at its training level
    // settle it in a few outcomes, after which no decision explores.
    let mut explored = vec![0; router.models.len()];
    for _pass in 0..200 {
        let Some(&(i, model)) = explorations(&router, &mut rng).first() else {
            break;
        };
        explored[model] += 1;
        let expected = trained(&router, i, model);
        router
            .observe(&outcome(&router, &texts[i], model, expected), None)
            .unwrap();
    }
    assert!(explorations(&router, &mut rng).is_empty(), "{explored:?}");
    assert!(
        explored.iter().filter(|&&n| n > 0).count() >= 2,
        "{explored:?}"
    );
    assert!(explored.iter().all(|&n| n <= 3), "{explored:?}");
    // Outcomes at the training level are weak evidence against a change, one by one: at odds
    // of 4 against it, as many do not rule out every model.
    assert!(!screened(&router, &mut rng, Some(4.0)).is_empty());
    for (model, &n) in explored.iter().enumerate().filter(|(_, &n)| n > 0) {
        let (_, mean, error) = router.learned().shift(model);
        assert!(
            mean + OPTIMISM * error < CHANGE_WORTH_FINDING,
            "model {model} after {n}"
        );
    }
    // A settled model whose outcomes then beat its training level is explored again.
    let model = explored.iter().position(|&n| n > 0).unwrap();
    let i = (0..texts.len())
        .find(|&i| trained(&router, i, model) < 0.7)
        .unwrap();
    for _ in 0..3 {
        router
            .observe(&outcome(&router, &texts[i], model, 1.0), None)
            .unwrap();
    }
    let (applied, mean, error) = router.learned().shift(model);
    assert_eq!(applied, 0.0, "not yet a shift: only worth a look");
    assert!(mean + OPTIMISM * error >= CHANGE_WORTH_FINDING);
    assert!(explorations(&router, &mut rng)
        .iter()
        .any(|&(_, m)| m == model));
    // Once its outcomes (0.2 above its training level everywhere) make the change a shift,
    // the change is found: the model is learned from them and not looked at again, though its
    // bound stays above the bar and it is now the greedy choice for some queries, not all.
    let mut outcomes = 3;
    while router.learned().shift(model).0 == 0.0 {
        let j = outcomes % texts.len();
        let better = (trained(&untouched, j, model) + 0.2).min(1.0);
        router
            .observe(&outcome(&router, &texts[j], model, better), None)
            .unwrap();
        outcomes += 1;
        assert!(outcomes < 100, "no shift after {outcomes} outcomes");
    }
    let (_, mean, error) = router.learned().shift(model);
    assert!(mean + OPTIMISM * error >= CHANGE_WORTH_FINDING);
    let routed = router.route(&embeddings, &params()).unwrap();
    let greedy = (0..texts.len())
        .filter(|&i| routed.best(i) == model)
        .count();
    assert!(0 < greedy && greedy < texts.len(), "greedy for {greedy}");
    assert_eq!(explorations(&router, &mut rng), vec![], "after {outcomes}");
}

#[test]
fn kroute_update_learns_from_a_file_like_the_library_and_checks_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let router = load_router();
    let texts = &fixture().queries[..12];
    // Each line names only the models it has outcomes for; costs are optional.
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let (a, b) = (&router.models[i % 3], &router.models[3 + i % 4]);
            let usages = match i % 2 {
                0 => serde_json::json!({ a: {"cost": 0.002} }),
                _ => serde_json::json!({}),
            };
            serde_json::json!({"query": text, "records": {a: i % 2 == 0, b: 0.5}, "usages": usages})
                .to_string()
        })
        .collect();
    let feedback = dir.path().join("judged.jsonl");
    std::fs::write(&feedback, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("updated");
    let router_dir = fixture().router.to_str().unwrap();
    let summary = dir.path().join("summary.json");
    let (ok, stderr) = run(&[
        "update",
        router_dir,
        "--feedback",
        feedback.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(ok, "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["observations"], 24);
    let updated = Router::load(&out, &Device::Cpu).unwrap();
    assert_eq!(updated.learned().observations, 24);
    assert_eq!(
        updated.learned().sources[0].source,
        feedback.display().to_string()
    );

    // The library on the same outcomes gives the same cells (up to batched-embedding noise).
    let mut expected = router.clone();
    let embeddings = fixture().embedder.embed(texts).unwrap();
    let outcomes: Vec<Vec<(usize, f64, Option<f64>)>> = (0..texts.len())
        .map(|i| {
            let cost = (i % 2 == 0).then_some(0.002);
            vec![
                (i % 3, (i % 2 == 0) as u8 as f64, cost),
                (3 + i % 4, 0.5, None),
            ]
        })
        .collect();
    expected
        .observe_queries(&embeddings, &outcomes, &params(), None, "library")
        .unwrap();
    let cells = |r: &Router| r.learned().cells().to_vec();
    for (got, want) in cells(&updated).iter().zip(cells(&expected)) {
        assert!((got.accuracy.weight - want.accuracy.weight).abs() < 1e-5);
        assert!((got.accuracy.sum - want.accuracy.sum).abs() < 1e-5);
        assert!((got.cost.weight - want.cost.weight).abs() < 1e-5);
    }

    // A model the router lacks, or a bad line, fails before anything is written.
    let unknown = dir.path().join("unknown.jsonl");
    std::fs::write(
        &unknown,
        format!(
            "{}\n",
            serde_json::json!({"query": "q", "records": {"gpt-9": 1}})
        ),
    )
    .unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!("{}\n{{\"query\": 3, \"records\": {{}}}}\n", lines[0]),
    )
    .unwrap();
    let before = files_in(dir.path());
    for (file, expected) in [
        (&unknown, "model `gpt-9` is not in the router"),
        (&bad, "bad.jsonl:2: field `query`"),
    ] {
        let refused = dir.path().join("refused");
        let (ok, stderr) = run(&[
            "update",
            router_dir,
            "--feedback",
            file.to_str().unwrap(),
            "-o",
            refused.to_str().unwrap(),
        ]);
        assert!(!ok);
        assert!(stderr.contains(expected), "{stderr}");
        assert_eq!(files_in(dir.path()), before);
    }
}

#[test]
fn a_state_directory_recovers_its_snapshot_and_log_and_refuses_other_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let base = load_router();
    let clusters = clusters_id(&base).unwrap();
    let record = |i: usize, model: usize| {
        let observation = outcome(&base, &fixture().queries[i], model, (i % 2) as f64);
        FeedbackRecord {
            at_ms: 0,
            clusters: clusters.clone(),
            votes: observation.votes,
            model: base.models[model].clone(),
            score: observation.score,
            cost: None,
            decision_id: None,
            idempotency_key: Some(format!("key-{i}")),
        }
    };
    // A snapshot through record 2, then records 3 and 4 in the log.
    let mut expected = base.clone();
    {
        let state = StateDir::open(dir.path()).unwrap();
        // One server per directory.
        let error = StateDir::open(dir.path()).err().unwrap().to_string();
        assert!(error.contains("held by another kroute serve"), "{error}");
        let mut wal = WalWriter::open(&state.wal_dir(), 1).unwrap();
        for i in 1..=4 {
            let record = record(i, i % 3);
            let observation = record.observation(&base, &clusters).unwrap();
            expected.observe(&observation, None).unwrap();
            wal.append(&serde_json::to_vec(&record).unwrap()).unwrap();
            if i == 2 {
                wal.sync().unwrap();
                let saved = ServerState {
                    sequence: 2,
                    ..Default::default()
                };
                state.write_snapshot(&expected, &saved).unwrap();
            }
        }
        wal.sync().unwrap();
    }
    let state = StateDir::open(dir.path()).unwrap();
    let mut recovered = base.clone();
    let report = state.recover(&mut recovered, None).unwrap();
    assert_eq!((report.sequence, report.replayed), (4, 2));
    assert_eq!(recovered.learned().observations, 4);
    let cells = |r: &Router| r.learned().cells().to_vec();
    assert_eq!(cells(&recovered), cells(&expected));
    // The keys of both the snapshot's outcomes (none saved here) and the log's come back.
    let keys: Vec<&str> = report
        .idempotency_keys
        .iter()
        .map(|k| k.key.as_str())
        .collect();
    assert_eq!(keys, ["key-3", "key-4"]);
    // `kroute route` reads the directory's current state read-only, even while it is held.
    let current = kroute::state::open_router(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(cells(&current), cells(&expected));
    // DIR/snapshot is a router directory.
    assert!(Router::load(&dir.path().join("snapshot"), &Device::Cpu).is_ok());

    // A router with other clusters cannot take over what was learned on these.
    let mut other = base.clone();
    other.centroids = (other.centroids.clone() * 0.5).unwrap();
    let error = state.recover(&mut other, None).unwrap_err().to_string();
    assert!(error.contains("learned on other clusters"), "{error}");
}
