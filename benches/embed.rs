//! Embedding throughput on the bundled RouterBench queries (CPU, f32, default model).
//! `cargo bench --bench embed`; the cross-engine comparison is `benches/compare_embed.py`.

use std::path::Path;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kroute::io::{TextReader, TextReaderOptions};
use kroute::model::{resolve, DEFAULT_MODEL};
use kroute::{Embedder, EmbedderOptions};

fn corpus(n: usize) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/routerbench-3k.jsonl.gz");
    TextReader::open(&path, TextReaderOptions::default())
        .unwrap()
        .texts()
        .take(n)
        .collect::<kroute::Result<_>>()
        .unwrap()
}

fn embed(c: &mut Criterion) {
    let texts = corpus(256);
    let files = resolve(DEFAULT_MODEL).unwrap();
    let mut group = c.benchmark_group("embed");
    group.sample_size(10);
    group.throughput(Throughput::Elements(texts.len() as u64));
    for budget in [1024, 2048, 8192] {
        let options = EmbedderOptions {
            max_batch_tokens: Some(budget),
            ..Default::default()
        };
        let embedder = Embedder::from_files(files.clone(), &Device::Cpu, None, options).unwrap();
        group.bench_function(format!("minilm_f32_cpu/batch_tokens_{budget}"), |b| {
            b.iter(|| embedder.embed(&texts).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, embed);
criterion_main!(benches);
