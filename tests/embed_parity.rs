//! The embedding engine against sentence-transformers' own output, and invariance to batching.

mod common;

use common::{cosine, embedder, fixture_path};
use kroute::EmbedderOptions;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    texts: Vec<String>,
    untruncated_tokens: Vec<usize>,
    embeddings: Vec<Vec<f32>>,
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(fixture_path("minilm_parity.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn matches_sentence_transformers_on_cpu_f32() {
    let fixture = fixture();
    assert!(fixture.texts.len() >= 48);
    assert!(fixture.untruncated_tokens.iter().any(|&n| n > 256));
    assert!(fixture
        .untruncated_tokens
        .iter()
        .any(|&n| n > 128 && n <= 256));

    let embedder = embedder(EmbedderOptions::default());
    assert_eq!(embedder.max_seq_length(), 256);
    let ours = embedder.embed_vecs(&fixture.texts).unwrap();
    assert_eq!(ours.len(), fixture.texts.len());
    for (i, (got, want)) in ours.iter().zip(&fixture.embeddings).enumerate() {
        let cos = cosine(got, want);
        assert!(
            cos >= 0.9999,
            "text {i} ({} tokens, {:?}…): cosine {cos}",
            fixture.untruncated_tokens[i],
            fixture.texts[i].chars().take(30).collect::<String>()
        );
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "text {i} not normalised: {norm}");
    }
}

#[test]
fn truncation_is_counted() {
    let fixture = fixture();
    let embedder = embedder(EmbedderOptions::default());
    let texts: Vec<&str> = fixture.texts.iter().map(String::as_str).collect();
    let mut rows = 0;
    let stats = embedder
        .embed_stream(
            texts.iter().map(|t| Ok(*t)),
            |chunk| {
                rows += chunk.dims2()?.0;
                Ok(())
            },
            |_| {},
        )
        .unwrap();
    let over = fixture
        .untruncated_tokens
        .iter()
        .filter(|&&n| n > 256)
        .count();
    assert_eq!(stats.truncated, over);
    assert_eq!(stats.texts, texts.len());
    assert_eq!(rows, texts.len());
    assert!(stats.padded_tokens >= stats.tokens);
}

#[test]
fn batch_composition_does_not_change_results() {
    let fixture = fixture();
    let texts = &fixture.texts;
    // Tiny budget: nearly one text per batch; tiny chunks: sorting only within few texts.
    let one_by_one = embedder(EmbedderOptions {
        max_batch_tokens: Some(1),
        chunk_size: 1,
        ..Default::default()
    })
    .embed_vecs(texts)
    .unwrap();
    let small = embedder(EmbedderOptions {
        max_batch_tokens: Some(300),
        chunk_size: 7,
        ..Default::default()
    })
    .embed_vecs(texts)
    .unwrap();
    let large = embedder(EmbedderOptions {
        max_batch_tokens: Some(1 << 16),
        ..Default::default()
    })
    .embed_vecs(texts)
    .unwrap();
    let max_diff = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        a.iter()
            .zip(b)
            .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
            .fold(0f32, f32::max)
    };
    assert!(
        max_diff(&one_by_one, &large) <= 1e-5,
        "{}",
        max_diff(&one_by_one, &large)
    );
    assert!(
        max_diff(&small, &large) <= 1e-5,
        "{}",
        max_diff(&small, &large)
    );
    // Output order is input order: each row matches the reference row for the same text.
    for (i, row) in large.iter().enumerate() {
        let best = fixture
            .embeddings
            .iter()
            .enumerate()
            .max_by(|a, b| cosine(row, a.1).total_cmp(&cosine(row, b.1)))
            .unwrap()
            .0;
        assert_eq!(
            fixture.embeddings[best], fixture.embeddings[i],
            "row {i} out of order"
        );
    }
}

#[test]
fn empty_input_gives_empty_tensor() {
    let embedder = embedder(EmbedderOptions::default());
    let out = embedder.embed::<&str>(&[]).unwrap();
    assert_eq!(out.dims(), &[0, 384]);
}
