//! Tokenization: the model's `tokenizer.json` with our truncation and no padding (batches pad
//! themselves to their own longest row), run in parallel over a chunk of texts.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

pub struct TextTokenizer {
    inner: Tokenizer,
    /// Prepended to every text before tokenization (sentence-transformers' prompts).
    prompt: String,
}

/// One tokenized text.
pub struct Tokens {
    pub ids: Vec<u32>,
    /// Whether the text was longer than the limit and cut.
    pub truncated: bool,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, replacing its own truncation and padding: MiniLM's file truncates
    /// at 128 and pads to 128, while sentence-transformers embeds up to `max_seq_length` tokens.
    pub fn load(path: &Path, max_seq_length: usize, prompt: String) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Self { inner, prompt })
    }

    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    /// The largest token id the tokenizer can produce, added tokens included.
    pub fn largest_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
    }

    /// Tokenizes on all cores (the tokenizers crate parallelises batches with rayon).
    pub fn tokenize<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Tokens>> {
        let encodings = if self.prompt.is_empty() {
            let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
            self.inner.encode_batch_fast(inputs, true)
        } else {
            let inputs: Vec<String> = texts
                .iter()
                .map(|t| format!("{}{}", self.prompt, t.as_ref()))
                .collect();
            self.inner.encode_batch_fast(inputs, true)
        }
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encodings
            .into_iter()
            .map(|e| Tokens {
                truncated: !e.get_overflowing().is_empty(),
                ids: e.get_ids().to_vec(),
            })
            .collect())
    }
}
