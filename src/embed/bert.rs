//! A BERT encoder (MiniLM, bge, e5, …) written for inference throughput.
//!
//! It reads the configuration type of `candle-transformers` and the same checkpoints, but runs
//! its own forward pass because inference lets us do less work than the generic model:
//! - Q, K and V are one fused matmul, with the 1/√d attention scale folded into Q's weights;
//! - biases, GELU, residuals, layer norms and the mask are fused passes after the matmuls
//!   (`ops.rs`);
//! - the token-type embedding (always type 0 for single sentences) is folded into the position
//!   table at load time;
//! - hidden states stay 2-D (`tokens × hidden`), so every linear layer is one GEMM;
//! - the attention mask is an additive bias built once per batch with a finite large negative,
//!   which stays correct in f16/bf16 (the generic model multiplies `0 × −inf` there).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

use super::ops;
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
    hidden: usize,
    eps: f32,
}

/// One layer's weights as `(out, in)` matrices; biases are applied by the fused ops that
/// follow each matmul. `*_norm` hold the stacked (bias, gamma, beta) of the output dense layer
/// and the layer norm after it.
struct BertLayer {
    qkv_weight: Tensor,
    qkv_bias: Tensor,
    attention_out: Tensor,
    attention_norm: Tensor,
    intermediate: Tensor,
    intermediate_bias: Tensor,
    output: Tensor,
    output_norm: Tensor,
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
        if !hidden.is_multiple_of(config.num_attention_heads) {
            return Err(Error::Invalid(format!(
                "hidden_size {hidden} is not a multiple of num_attention_heads {}",
                config.num_attention_heads
            )));
        }
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
        let (gamma, beta) = norm_params(&emb.pp("LayerNorm"), hidden)?;
        let embeddings_norm = LayerNorm::new(gamma, beta, config.layer_norm_eps);

        let layers = (0..config.num_hidden_layers)
            .map(|i| BertLayer::load(vb.pp(format!("encoder.layer.{i}")), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings,
            position_type_embeddings,
            embeddings_norm,
            layers,
            hidden_act: config.hidden_act,
            num_heads: config.num_attention_heads,
            hidden,
            eps: config.layer_norm_eps as f32,
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
        for layer in &self.layers {
            hidden = layer.forward(&hidden, attention_bias, self, batch)?;
        }
        Ok(hidden.reshape((batch, seq, self.hidden))?)
    }
}

impl BertLayer {
    fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let scale = 1.0 / ((h / config.num_attention_heads) as f64).sqrt();
        let attn = vb.pp("attention.self");
        let part = |name: &str, factor: f64| -> Result<(Tensor, Tensor)> {
            let w = (attn.get((h, h), &format!("{name}.weight"))? * factor)?;
            let b = (attn.get(h, &format!("{name}.bias"))? * factor)?;
            Ok((w, b))
        };
        let (qw, qb) = part("query", scale)?;
        let (kw, kb) = part("key", 1.0)?;
        let (vw, vb_) = part("value", 1.0)?;
        let dense_norm = |dense: &str, norm: &str, in_dim: usize| -> Result<(Tensor, Tensor)> {
            let weight = vb.pp(dense).get((h, in_dim), "weight")?;
            let bias = vb.pp(dense).get(h, "bias")?;
            let (gamma, beta) = norm_params(&vb.pp(norm), h)?;
            Ok((weight, Tensor::stack(&[bias, gamma, beta], 0)?))
        };
        let (attention_out, attention_norm) =
            dense_norm("attention.output.dense", "attention.output.LayerNorm", h)?;
        let (output, output_norm) = dense_norm("output.dense", "output.LayerNorm", i)?;
        Ok(Self {
            qkv_weight: Tensor::cat(&[qw, kw, vw], 0)?,
            qkv_bias: Tensor::cat(&[qb, kb, vb_], 0)?,
            attention_out,
            attention_norm,
            intermediate: vb.pp("intermediate.dense").get((i, h), "weight")?,
            intermediate_bias: vb.pp("intermediate.dense").get(i, "bias")?,
            output,
            output_norm,
        })
    }

    /// `hidden`: `(batch·seq, hidden)`; `bias`: `(batch, seq)`.
    fn forward(
        &self,
        hidden: &Tensor,
        bias: &Tensor,
        model: &BertEncoder,
        batch: usize,
    ) -> Result<Tensor> {
        let qkv = hidden.matmul(&self.qkv_weight.t()?)?;
        let [q, k, v] = ops::split_heads(&qkv, &self.qkv_bias, batch, model.num_heads)?;
        let probs = ops::masked_softmax(&q.matmul(&k.t()?)?, bias)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((hidden.dim(0)?, model.hidden))?;
        let attention = context.matmul(&self.attention_out.t()?)?;
        let attended =
            ops::bias_residual_norm(&attention, hidden, &self.attention_norm, model.eps)?;

        let inner = attended.matmul(&self.intermediate.t()?)?;
        let inner = match model.hidden_act {
            HiddenAct::Gelu => ops::bias_gelu(&inner, &self.intermediate_bias)?,
            HiddenAct::GeluApproximate => inner.broadcast_add(&self.intermediate_bias)?.gelu()?,
            HiddenAct::Relu => inner.broadcast_add(&self.intermediate_bias)?.relu()?,
        };
        let out = inner.matmul(&self.output.t()?)?;
        ops::bias_residual_norm(&out, &attended, &self.output_norm, model.eps)
    }
}

/// A layer norm's (gamma, beta), under the `weight/bias` or the original BERT's `gamma/beta` names.
fn norm_params(vb: &VarBuilder, size: usize) -> Result<(Tensor, Tensor)> {
    let (w, b) = if vb.contains_tensor("weight") {
        ("weight", "bias")
    } else {
        ("gamma", "beta")
    };
    Ok((vb.get(size, w)?, vb.get(size, b)?))
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
