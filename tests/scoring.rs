//! Scoring and routing against hand-computed numbers: both scoring rules, ties, models without
//! data in a cluster, α at both ends, and the softmax vote over the nearest clusters.

use candle_core::{Device, Tensor};
use kroute::embed::models::Architecture;
use kroute::embed::Pooling;
use kroute::router::{
    ClusterStats, EmbeddingInfo, Estimates, ReferenceScoring, RouteParams, Router, Scoring,
    TrainingInfo,
};

fn cluster(accuracy: &[Option<f64>], cost: &[Option<f64>]) -> ClusterStats {
    ClusterStats {
        size: 10,
        count: accuracy
            .iter()
            .map(|a| if a.is_some() { 10 } else { 0 })
            .collect(),
        accuracy: accuracy.to_vec(),
        cost: cost.to_vec(),
        tokens: Vec::new(),
    }
}

/// A cluster's training means as scoring reads them (no shrinkage).
fn means(stats: &ClusterStats) -> Estimates {
    Estimates {
        accuracy: stats.accuracy.clone(),
        cost: stats.cost.clone(),
    }
}

fn close(a: &[Option<f64>], b: &[Option<f64>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() < 1e-12,
            (None, None) => true,
            _ => false,
        })
}

fn paper(alpha: f64) -> Scoring {
    Scoring::Paper { alpha }
}

fn reference(min_accuracy: f64) -> Scoring {
    Scoring::Reference(ReferenceScoring {
        min_accuracy,
        ..Default::default()
    })
}

#[test]
fn paper_scores_min_max_normalise_over_models_with_data() {
    // Accuracy 0.9 / 0.5 / 0.7 → p̃ = 1, 0, 0.5; cost 0.01 / 0.002 / 0.004 → q̃ = 1, 0, 0.25.
    // The fourth model was never evaluated here.
    let stats = cluster(
        &[Some(0.9), Some(0.5), Some(0.7), None],
        &[Some(0.01), Some(0.002), Some(0.004), None],
    );
    let cases = [
        (1.0, [Some(1.0), Some(0.0), Some(0.5), None]),
        (0.0, [Some(0.0), Some(1.0), Some(0.75), None]),
        (0.25, [Some(0.25), Some(0.75), Some(0.6875), None]),
    ];
    for (alpha, expected) in cases {
        let scores = paper(alpha).cluster_scores(&means(&stats));
        assert!(close(&scores, &expected), "α={alpha}: {scores:?}");
    }
    // No data → no vote.
    assert_eq!(
        paper(0.25).cluster_votes(&means(&stats)),
        [0.25, 0.75, 0.6875, 0.0]
    );
}

#[test]
fn paper_terms_are_one_when_all_models_tie() {
    let same_accuracy = cluster(&[Some(0.6), Some(0.6)], &[Some(0.1), Some(0.3)]);
    assert!(close(
        &paper(1.0).cluster_scores(&means(&same_accuracy)),
        &[Some(1.0), Some(1.0)]
    ));
    assert!(close(
        &paper(0.5).cluster_scores(&means(&same_accuracy)),
        &[Some(1.0), Some(0.5)]
    ));
    let same_cost = cluster(&[Some(0.2), Some(0.6)], &[Some(0.1), Some(0.1)]);
    assert!(close(
        &paper(0.0).cluster_scores(&means(&same_cost)),
        &[Some(1.0), Some(1.0)]
    ));
}

#[test]
fn reference_scores_rank_into_votes() {
    // acc term 1, 0, 0.5; cost term 1 − c/0.01 = 0, 0.8, 0.6;
    // score = 0.7·acc + 0.3·cost = 0.7, 0.24, 0.53 → ranks 0, 2, 1.
    let stats = cluster(
        &[Some(0.9), Some(0.5), Some(0.7), None],
        &[Some(0.01), Some(0.002), Some(0.004), None],
    );
    let scores = reference(0.0).cluster_scores(&means(&stats));
    assert!(
        close(&scores, &[Some(0.7), Some(0.24), Some(0.53), None]),
        "{scores:?}"
    );
    assert_eq!(
        reference(0.0).cluster_votes(&means(&stats)),
        [1.0, 1.0 / 3.0, 0.5, 0.0]
    );
    // Under min_accuracy 0.8 two models score 0 and tie: model order breaks it.
    let scores = reference(0.8).cluster_scores(&means(&stats));
    assert!(
        close(&scores, &[Some(0.7), Some(0.0), Some(0.0), None]),
        "{scores:?}"
    );
    assert_eq!(
        reference(0.8).cluster_votes(&means(&stats)),
        [1.0, 0.5, 1.0 / 3.0, 0.0]
    );
    // All accuracies equal → accuracy term 1; highest cost 0 → cost term 1.
    let flat = cluster(&[Some(0.5), Some(0.5)], &[Some(0.0), Some(0.0)]);
    assert!(close(
        &reference(0.0).cluster_scores(&means(&flat)),
        &[Some(1.0), Some(1.0)]
    ));
}

/// Three clusters on the unit circle; model 0 is accurate and dear, model 1 cheap and weak,
/// model 2 only has data in cluster 2.
fn toy_router() -> Router {
    let centroids = Tensor::new(&[[1f32, 0.0], [0.0, 1.0], [-1.0, 0.0]], &Device::Cpu).unwrap();
    let clusters = vec![
        cluster(
            &[Some(0.9), Some(0.3), None],
            &[Some(0.02), Some(0.001), None],
        ),
        cluster(
            &[Some(0.6), Some(0.6), None],
            &[Some(0.01), Some(0.002), None],
        ),
        cluster(
            &[Some(0.1), Some(0.2), Some(0.9)],
            &[Some(0.03), Some(0.01), Some(0.02)],
        ),
    ];
    Router::from_parts(
        vec!["dear".into(), "cheap".into(), "niche".into()],
        centroids,
        clusters,
        1,
        EmbeddingInfo {
            model: "toy".into(),
            revision: None,
            weights_sha256: "0".repeat(64),
            architecture: Architecture::Bert,
            dim: 2,
            normalized: true,
            pooling: Pooling::Mean,
            prompt: String::new(),
            max_seq_length: 8,
        },
        RouteParams::default(),
        TrainingInfo::default(),
    )
}

#[test]
fn routes_by_softmax_weighted_votes_of_the_nearest_clusters() {
    let router = toy_router();
    // q = (0.6, 0.8): distances 1 − q·c = 0.4, 0.2, 1.6; the two nearest are clusters 1 then 0.
    let q = Tensor::new(&[[0.6f32, 0.8]], &Device::Cpu).unwrap();
    let beta = 9.0;
    let w1 = 1.0 / (1.0 + (-beta * (0.4 - 0.2f64)).exp());
    let w0 = 1.0 - w1;
    for (alpha, votes0, votes1) in [
        // cluster 0: p̃ = 1, 0; q̃ = 1, 0.  cluster 1: p̃ = 1, 1 (tie); q̃ = 1, 0.
        (1.0, [1.0, 0.0], [1.0, 1.0]),
        (0.0, [0.0, 1.0], [0.0, 1.0]),
        (0.5, [0.5, 0.5], [0.5, 1.0]),
    ] {
        let params = RouteParams {
            scoring: paper(alpha),
            top_p: 2,
            beta,
            ..Default::default()
        };
        let routed = router.route(&q, &params).unwrap();
        let nearest: Vec<_> = routed.nearest(0).collect();
        assert_eq!((nearest[0].0, nearest[1].0), (1, 0));
        assert!((nearest[0].1 - 0.2).abs() < 1e-6 && (nearest[1].1 - 0.4).abs() < 1e-6);
        assert!((nearest[0].2 as f64 - w1).abs() < 1e-6);
        let expected = [
            w0 * votes0[0] + w1 * votes1[0],
            w0 * votes0[1] + w1 * votes1[1],
            0.0,
        ];
        for (got, want) in routed.totals(0).iter().zip(expected) {
            assert!(
                (*got as f64 - want).abs() < 1e-6,
                "α={alpha}: {:?} vs {expected:?}",
                routed.totals(0)
            );
        }
    }
    // α = 1: "dear" wins; α = 0: "cheap" wins.
    let best = |alpha| {
        router
            .route(
                &q,
                &RouteParams {
                    scoring: paper(alpha),
                    top_p: 2,
                    beta,
                    ..Default::default()
                },
            )
            .unwrap()
            .best(0)
    };
    assert_eq!((best(1.0), best(0.0)), (0, 1));
}

#[test]
fn ties_go_to_the_first_model_and_top_p_limits_the_vote() {
    let router = toy_router();
    // Straight at cluster 1 with a vote of one cluster: α = 1 ties "dear" and "cheap".
    let q = Tensor::new(&[[0f32, 1.0]], &Device::Cpu).unwrap();
    let params = RouteParams {
        scoring: paper(1.0),
        top_p: 1,
        beta: 9.0,
        ..Default::default()
    };
    let routed = router.route(&q, &params).unwrap();
    assert_eq!(routed.totals(0)[0], routed.totals(0)[1]);
    assert_eq!(routed.best(0), 0);
    assert_eq!(routed.ranking(0), [0, 1, 2]);
    // Next to cluster 2, the only one where "niche" has data, it wins at α = 1.
    let q = Tensor::new(&[[-1f32, 0.0], [0.0, 1.0]], &Device::Cpu).unwrap();
    let routed = router.route(&q, &params).unwrap();
    assert_eq!((routed.len(), routed.best(0), routed.best(1)), (2, 2, 0));
    // top_p larger than the number of clusters means all of them.
    let all = RouteParams {
        top_p: 10,
        ..params
    };
    assert_eq!(router.route(&q, &all).unwrap().top_p, 3);
}

#[test]
fn reference_mode_sums_weighted_reciprocal_ranks() {
    let router = toy_router();
    let q = Tensor::new(&[[0.6f32, 0.8]], &Device::Cpu).unwrap();
    let params = RouteParams {
        scoring: reference(0.0),
        top_p: 2,
        beta: 9.0,
        ..Default::default()
    };
    let routed = router.route(&q, &params).unwrap();
    let w1 = 1.0 / (1.0 + (-9.0 * 0.2f64).exp());
    let w0 = 1.0 - w1;
    // Cluster 0: dear 0.7·1 + 0.3·0 = 0.7, cheap 0 + 0.3·0.95 = 0.285 → votes 1, 1/2.
    // Cluster 1: both accuracy term 1; cost terms 0, 0.8 → 0.7, 0.94 → votes 1/2, 1.
    let expected = [w0 + w1 * 0.5, w0 * 0.5 + w1, 0.0];
    for (got, want) in routed.totals(0).iter().zip(expected) {
        assert!(
            (*got as f64 - want).abs() < 1e-6,
            "{:?} vs {expected:?}",
            routed.totals(0)
        );
    }
}

#[test]
fn invalid_routing_parameters_are_refused() {
    let router = toy_router();
    let q = Tensor::new(&[[1f32, 0.0]], &Device::Cpu).unwrap();
    for params in [
        RouteParams {
            scoring: paper(1.5),
            ..Default::default()
        },
        RouteParams {
            top_p: 0,
            ..Default::default()
        },
        RouteParams {
            beta: -1.0,
            ..Default::default()
        },
    ] {
        assert!(router.route(&q, &params).is_err(), "{params:?}");
    }
}
