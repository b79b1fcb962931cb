//! MPNet (all-mpnet-base-v2): a post-norm encoder like BERT without token types, positions
//! numbered from `padding_idx + 1`, and a learned relative-position bias added to every layer's
//! attention scores (T5-style log buckets of the query–key distance, one value per head).

use candle_core::{DType, Module, Tensor};
use candle_nn::{Embedding, VarBuilder};
use serde::Deserialize;

use super::transformer::{
    encoder_root, layer_norm, Activation, Dims, LayerNames, PostNormEncoder, TokenEmbeddings,
};
use super::{Architecture, Encoder};
use crate::error::Result;
use crate::kernels::int8::Isa;

/// Distances at or beyond this share the last bucket (fixed in MPNet).
const MAX_DISTANCE: usize = 128;

#[derive(Debug, Clone, Deserialize)]
pub struct MpnetConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_pad_token_id")]
    pub pad_token_id: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
}

fn default_layer_norm_eps() -> f64 {
    1e-5
}

fn default_pad_token_id() -> usize {
    1
}

fn default_buckets() -> usize {
    32
}

const LAYER: LayerNames = LayerNames {
    query: "attention.attn.q",
    key: "attention.attn.k",
    value: "attention.attn.v",
    attention_out: "attention.attn.o",
    attention_norm: "attention.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
};

pub struct Mpnet {
    encoder: PostNormEncoder,
    /// `(buckets, heads)`: the attention bias of each distance bucket.
    relative_bias: Embedding,
    buckets: usize,
}

impl Mpnet {
    pub fn load(vb: VarBuilder, config: &MpnetConfig, int8: Option<Isa>) -> Result<Self> {
        let dims = Dims {
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            layers: config.num_hidden_layers,
            eps: config.layer_norm_eps,
            activation: config.hidden_act,
        };
        dims.validate()?;
        if config.relative_attention_num_buckets < 4 {
            return Err(crate::Error::Invalid(format!(
                "relative_attention_num_buckets must be at least 4, got {}",
                config.relative_attention_num_buckets
            )));
        }
        let vb = encoder_root(vb, "embeddings.word_embeddings.weight", &["mpnet"]);
        let emb = vb.pp("embeddings");
        let h = config.hidden_size;
        let embeddings = TokenEmbeddings::new(
            emb.get((config.vocab_size, h), "word_embeddings.weight")?,
            emb.get(
                (config.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            config.pad_token_id + 1,
            None,
            layer_norm(&emb.pp("LayerNorm"), h, config.layer_norm_eps)?,
        )?;
        let buckets = config.relative_attention_num_buckets;
        let heads = config.num_attention_heads;
        let relative_bias = Embedding::new(
            vb.get((buckets, heads), "encoder.relative_attention_bias.weight")?,
            heads,
        );
        Ok(Self {
            encoder: PostNormEncoder::load(&vb, embeddings, "encoder.layer", &LAYER, dims, int8)?,
            relative_bias,
            buckets,
        })
    }

    /// `(heads, seq, seq)`: the bias every layer adds to the attention scores.
    fn position_bias(&self, seq: usize, dtype: DType) -> Result<Tensor> {
        let buckets: Vec<u32> = (0..seq)
            .flat_map(|query| {
                (0..seq).map(move |key| {
                    relative_bucket(key as i64 - query as i64, self.buckets, MAX_DISTANCE) as u32
                })
            })
            .collect();
        let device = self.relative_bias.embeddings().device();
        let buckets = Tensor::from_vec(buckets, seq * seq, device)?;
        let heads = self.encoder.dims.heads;
        Ok(self
            .relative_bias
            .forward(&buckets)?
            .t()?
            .reshape((heads, seq, seq))?
            .to_dtype(dtype)?
            .contiguous()?)
    }
}

/// The bucket of a key at `relative` = key − query positions: half the buckets for keys before
/// the query and half for keys after; in each half, exact distances below a quarter of the
/// buckets, then logarithmic steps up to `max_distance`. The float arithmetic follows
/// transformers' `MPNetEncoder.relative_position_bucket` (f32, truncation), so that bucket edges
/// agree with the PyTorch model.
pub fn relative_bucket(relative: i64, buckets: usize, max_distance: usize) -> usize {
    let half = buckets / 2;
    let distance = -relative;
    let side = if distance < 0 { half } else { 0 };
    let distance = distance.unsigned_abs() as usize;
    let max_exact = half / 2;
    if distance < max_exact {
        return side + distance;
    }
    let log_ratio = (distance as f32 / max_exact as f32).ln()
        / ((max_distance as f64 / max_exact as f64).ln() as f32);
    let large = max_exact + (log_ratio * (half - max_exact) as f32) as usize;
    side + large.min(half - 1)
}

impl Encoder for Mpnet {
    fn architecture(&self) -> Architecture {
        Architecture::Mpnet
    }

    fn forward(&self, input_ids: &Tensor, attention_bias: &Tensor) -> Result<Tensor> {
        let seq = input_ids.dim(1)?;
        let position_bias = self.position_bias(seq, attention_bias.dtype())?;
        self.encoder
            .forward(input_ids, attention_bias, Some(&position_bias))
    }

    fn hidden_size(&self) -> usize {
        self.encoder.dims.hidden
    }

    fn max_positions(&self) -> usize {
        self.encoder.embeddings.max_positions()
    }

    fn vocab_size(&self) -> usize {
        self.encoder.embeddings.vocab_size()
    }

    fn flops_per_token(&self, seq: usize) -> f64 {
        self.encoder.dims.flops_per_token(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::relative_bucket;

    #[test]
    fn buckets_are_exact_near_and_logarithmic_far() {
        // Keys before the query (relative < 0) use the first half, keys after it the second.
        assert_eq!(relative_bucket(0, 32, 128), 0);
        assert_eq!(relative_bucket(-3, 32, 128), 3);
        assert_eq!(relative_bucket(3, 32, 128), 19);
        assert_eq!(relative_bucket(-7, 32, 128), 7);
        assert_eq!(relative_bucket(-8, 32, 128), 8);
        // Past max_distance everything shares the half's last bucket.
        assert_eq!(relative_bucket(-500, 32, 128), 15);
        assert_eq!(relative_bucket(500, 32, 128), 31);
        let mut previous = 0;
        for distance in 0..600 {
            let bucket = relative_bucket(-distance, 32, 128);
            assert!(bucket >= previous && bucket < 16);
            previous = bucket;
        }
    }
}
