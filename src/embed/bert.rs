//! A BERT encoder (MiniLM, bge, e5, …) written for inference throughput.
//!
//! It reads the configuration type of `candle-transformers` and the same checkpoints, but runs
//! its own forward pass because inference lets us do less work than the generic model:
//! - Q, K and V are one fused matmul, with the 1/√d attention scale folded into Q's weights;
//! - the token-type embedding (always type 0 for single sentences) is folded into the position
//!   table at load time;
//! - hidden states stay 2-D (`tokens × hidden`), so every linear layer is one GEMM;
//! - the attention mask is an additive bias built once per batch with a finite large negative,
//!   which stays correct in f16/bf16 (the generic model multiplies `0 × −inf` there).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

use crate::error::{Error, Result};

/// What masked positions add to attention scores: `exp` of it underflows to 0 in every dtype
/// and it is representable in f16.
pub const MASK_BIAS: f32 = -65504.0;

pub struct BertEncoder {
    word_embeddings: Embedding,
    /// Position embeddings plus the type-0 token-type embedding.
    position_type_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<BertLayer>,
    hidden_act: HiddenAct,
    num_heads: usize,
    head_dim: usize,
    hidden: usize,
}

struct BertLayer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl BertEncoder {
    /// Loads the weights under `vb` (checkpoints with a `bert.` prefix are accepted too).
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        let hidden = config.hidden_size;
        if hidden % config.num_attention_heads != 0 {
            return Err(Error::Invalid(format!(
                "hidden_size {hidden} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            )));
        }
        let head_dim = hidden / config.num_attention_heads;
        let emb = vb.pp("embeddings");
        let word_embeddings = Embedding::new(
            emb.get((config.vocab_size, hidden), "word_embeddings.weight")?,
            hidden,
        );
        let positions = emb.get(
            (config.max_position_embeddings, hidden),
            "position_embeddings.weight",
        )?;
        let type0 = emb
            .get(
                (config.type_vocab_size, hidden),
                "token_type_embeddings.weight",
            )?
            .get(0)?;
        let position_type_embeddings = positions.broadcast_add(&type0)?;
        let embeddings_norm = layer_norm(emb.pp("LayerNorm"), hidden, config.layer_norm_eps)?;

        let scale = 1.0 / (head_dim as f64).sqrt();
        let layers = (0..config.num_hidden_layers)
            .map(|i| BertLayer::load(vb.pp(format!("encoder.layer.{i}")), config, scale))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings,
            position_type_embeddings,
            embeddings_norm,
            layers,
            hidden_act: config.hidden_act,
            num_heads: config.num_attention_heads,
            head_dim,
            hidden,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    pub fn max_positions(&self) -> usize {
        self.position_type_embeddings.dim(0).unwrap_or(0)
    }

    /// Runs a padded batch. `input_ids`: `(batch, seq)` u32; `attention_bias`: `(batch, seq)`
    /// holding 0 for real tokens and [`MASK_BIAS`] for padding, in the model dtype.
    /// Returns the last hidden states as `(batch, seq, hidden)`.
    pub fn forward(&self, input_ids: &Tensor, attention_bias: &Tensor) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let words = self.word_embeddings.forward(&input_ids.flatten_all()?)?;
        let positions = self
            .position_type_embeddings
            .narrow(0, 0, seq)?
            .repeat((batch, 1))?;
        let mut hidden = self.embeddings_norm.forward(&(words + positions)?)?;
        let bias = attention_bias.reshape((batch, 1, 1, seq))?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, &bias, self, batch, seq)?;
        }
        Ok(hidden.reshape((batch, seq, self.hidden))?)
    }
}

impl BertLayer {
    fn load(vb: VarBuilder, config: &Config, scale: f64) -> Result<Self> {
        let h = config.hidden_size;
        let attn = vb.pp("attention.self");
        let part = |name: &str, factor: f64| -> Result<(Tensor, Tensor)> {
            let w = (attn.get((h, h), &format!("{name}.weight"))? * factor)?;
            let b = (attn.get(h, &format!("{name}.bias"))? * factor)?;
            Ok((w, b))
        };
        let (qw, qb) = part("query", scale)?;
        let (kw, kb) = part("key", 1.0)?;
        let (vw, vb_) = part("value", 1.0)?;
        let qkv = Linear::new(
            Tensor::cat(&[qw, kw, vw], 0)?,
            Some(Tensor::cat(&[qb, kb, vb_], 0)?),
        );
        let i = config.intermediate_size;
        Ok(Self {
            qkv,
            attention_out: linear(vb.pp("attention.output.dense"), h, h)?,
            attention_norm: layer_norm(
                vb.pp("attention.output.LayerNorm"),
                h,
                config.layer_norm_eps,
            )?,
            intermediate: linear(vb.pp("intermediate.dense"), h, i)?,
            output: linear(vb.pp("output.dense"), i, h)?,
            output_norm: layer_norm(vb.pp("output.LayerNorm"), h, config.layer_norm_eps)?,
        })
    }

    /// `hidden`: `(batch·seq, hidden)`; `bias`: `(batch, 1, 1, seq)`.
    fn forward(
        &self,
        hidden: &Tensor,
        bias: &Tensor,
        model: &BertEncoder,
        batch: usize,
        seq: usize,
    ) -> Result<Tensor> {
        let (heads, head_dim) = (model.num_heads, model.head_dim);
        let qkv = self
            .qkv
            .forward(hidden)?
            .reshape((batch, seq, 3, heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch * seq, heads * head_dim))?;
        let attended = (self.attention_out.forward(&context)? + hidden)?;
        let attended = self.attention_norm.forward(&attended)?;

        let inner = self.intermediate.forward(&attended)?;
        let inner = match model.hidden_act {
            HiddenAct::Gelu => inner.gelu_erf()?,
            HiddenAct::GeluApproximate => inner.gelu()?,
            HiddenAct::Relu => inner.relu()?,
        };
        let out = (self.output.forward(&inner)? + attended)?;
        Ok(self.output_norm.forward(&out)?)
    }
}

fn linear(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Linear> {
    Ok(Linear::new(
        vb.get((out_dim, in_dim), "weight")?,
        Some(vb.get(out_dim, "bias")?),
    ))
}

/// Layer norm, accepting both `weight/bias` and the original BERT's `gamma/beta` names.
fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
    let (w, b) = if vb.contains_tensor("weight") {
        ("weight", "bias")
    } else {
        ("gamma", "beta")
    };
    Ok(LayerNorm::new(vb.get(size, w)?, vb.get(size, b)?, eps))
}

/// Builds the additive attention bias for a padded batch from per-row lengths.
pub fn attention_bias(
    lengths: &[usize],
    seq: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let mut bias = vec![MASK_BIAS; lengths.len() * seq];
    for (row, &len) in lengths.iter().enumerate() {
        bias[row * seq..row * seq + len].fill(0.0);
    }
    Ok(Tensor::from_vec(bias, (lengths.len(), seq), device)?.to_dtype(dtype)?)
}
