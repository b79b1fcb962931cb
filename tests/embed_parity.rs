//! The embedding engine against sentence-transformers' own output on real weights (MiniLM, the
//! default BERT model, and MPNet), and invariance to batching.

mod common;

use candle_core::Device;
use common::{cosine, embedder, fixture_path};
use kroute::embed::models::Architecture;
use kroute::model::resolve;
use kroute::{Embedder, EmbedderOptions};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    texts: Vec<String>,
    untruncated_tokens: Vec<usize>,
    embeddings: Vec<Vec<f32>>,
}

fn fixture(name: &str) -> Fixture {
    let text = std::fs::read_to_string(fixture_path(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every text's vector within cosine 0.9999 of sentence-transformers', unit length.
fn assert_matches(embedder: &Embedder, fixture: &Fixture, max_seq_length: usize) {
    assert!(fixture.texts.len() >= 48);
    assert!(fixture
        .untruncated_tokens
        .iter()
        .any(|&n| n > max_seq_length));
    assert_eq!(embedder.max_seq_length(), max_seq_length);
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
fn matches_sentence_transformers_on_cpu_f32() {
    let fixture = fixture("minilm_parity.json");
    assert!(fixture
        .untruncated_tokens
        .iter()
        .any(|&n| n > 128 && n <= 256));
    assert_matches(&embedder(EmbedderOptions::default()), &fixture, 256);
}

#[test]
fn mpnet_matches_sentence_transformers_on_cpu_f32() {
    let files = resolve("sentence-transformers/all-mpnet-base-v2")
        .expect("all-mpnet-base-v2 resolves (`kroute models fetch sentence-transformers/all-mpnet-base-v2`)");
    let embedder =
        Embedder::from_files(files, &Device::Cpu, None, EmbedderOptions::default()).unwrap();
    assert_eq!(embedder.encoder().architecture(), Architecture::Mpnet);
    assert_eq!(embedder.dim(), 768);
    assert_matches(&embedder, &fixture("mpnet_parity.json"), 384);
}

#[test]
fn truncation_is_counted() {
    let fixture = fixture("minilm_parity.json");
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
    let fixture = fixture("minilm_parity.json");
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
