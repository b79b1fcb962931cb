//! The post-norm transformer encoder that BERT, (XLM-)RoBERTa and MPNet share, written for
//! inference throughput. Each architecture's file maps its checkpoint names onto these pieces
//! and adds what is its own (MPNet's relative position bias).
//!
//! What inference lets us do with less work than the generic models:
//! - Q, K and V are one fused matmul, with the 1/√d attention scale folded into Q's weights;
//! - biases, GELU, residuals, layer norms and the mask are fused passes after the matmuls
//!   (`ops.rs`);
//! - the token-type embedding (always type 0 for single sentences) and the position offset of
//!   RoBERTa-style models are folded into one position table at load time;
//! - hidden states stay 2-D (`tokens × hidden`), so every linear layer is one GEMM;
//! - the attention mask is an additive bias built once per batch with a finite large negative,
//!   which stays correct in f16/bf16 (multiplying `0 × −inf` there gives NaN).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use serde::Deserialize;

use super::attention::attention;
use super::linear::Linear;
use super::ops;
use crate::error::{Error, Result};
use crate::kernels::int8::Isa;

/// What masked positions add to attention scores: `exp` of it underflows to 0 in every dtype
/// and it is representable in f16.
pub const MASK_BIAS: f32 = -65504.0;

/// The feed-forward activation (`hidden_act` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// Exact GELU (erf), what BERT and MPNet checkpoints use.
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation of GELU.
    #[serde(
        rename = "gelu_new",
        alias = "gelu_pytorch_tanh",
        alias = "gelu_approximate",
        alias = "gelu_fast"
    )]
    GeluTanh,
    #[serde(rename = "relu")]
    Relu,
}

/// The sizes every layer of a post-norm encoder shares.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub layers: usize,
    pub eps: f64,
    pub activation: Activation,
}

impl Dims {
    /// Refuses shapes the attention cannot split.
    pub fn validate(&self) -> Result<()> {
        if self.heads == 0 || !self.hidden.is_multiple_of(self.heads) {
            return Err(Error::Invalid(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden, self.heads
            )));
        }
        Ok(())
    }

    /// Multiply-adds × 2 per token at sequence length `seq`: the dense layers and attention.
    pub fn flops_per_token(&self, seq: usize) -> f64 {
        let dense = 4 * self.hidden * self.hidden + 2 * self.hidden * self.intermediate;
        let attention = 2 * seq * self.hidden; // QKᵀ and AV
        (2 * self.layers * (dense + attention)) as f64
    }
}

/// Where one layer's weights sit under the layer's prefix in a checkpoint.
pub struct LayerNames {
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attention_out: &'static str,
    pub attention_norm: &'static str,
    pub intermediate: &'static str,
    pub output: &'static str,
    pub output_norm: &'static str,
}

/// Word embeddings plus one position table (offset and token type folded in), then a layer norm.
pub struct TokenEmbeddings {
    words: Embedding,
    positions: Tensor,
    norm: LayerNorm,
}

impl TokenEmbeddings {
    /// `positions`: the checkpoint's position table; rows before `position_offset` are never used
    /// (RoBERTa-style models number positions from `padding_idx + 1`). `token_type`: the type-0
    /// row added to every position, for models that have token types.
    pub fn new(
        words: Tensor,
        positions: Tensor,
        position_offset: usize,
        token_type: Option<Tensor>,
        norm: LayerNorm,
    ) -> Result<Self> {
        let (rows, hidden) = positions.dims2()?;
        if position_offset >= rows {
            return Err(Error::Invalid(format!(
                "position offset {position_offset} leaves none of the {rows} position embeddings"
            )));
        }
        let mut positions = positions.narrow(0, position_offset, rows - position_offset)?;
        if let Some(token_type) = token_type {
            positions = positions.broadcast_add(&token_type)?;
        }
        Ok(Self {
            words: Embedding::new(words, hidden),
            positions: positions.contiguous()?,
            norm,
        })
    }

    /// Tokens a sequence can hold.
    pub fn max_positions(&self) -> usize {
        self.positions.dim(0).unwrap_or(0)
    }

    pub fn vocab_size(&self) -> usize {
        self.words.embeddings().dim(0).unwrap_or(0)
    }

    /// `input_ids`: `(batch, seq)`, right-padded. Returns `(batch·seq, hidden)`.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        if seq > self.max_positions() {
            return Err(Error::Invalid(format!(
                "{seq} tokens exceed the model's {} positions",
                self.max_positions()
            )));
        }
        let words = self.words.forward(&input_ids.flatten_all()?)?;
        let positions = self.positions.narrow(0, 0, seq)?.repeat((batch, 1))?;
        Ok(self.norm.forward(&(words + positions)?)?)
    }
}

/// One post-norm layer: self-attention, add & norm, feed-forward, add & norm. Weights are
/// `(out, in)` matrices; biases are applied by the fused ops that follow each matmul. `*_norm`
/// hold the stacked (bias, gamma, beta) of the dense layer and the layer norm after it.
pub struct PostNormLayer {
    qkv_weight: Linear,
    qkv_bias: Tensor,
    attention_out: Linear,
    attention_norm: Tensor,
    intermediate: Linear,
    intermediate_bias: Tensor,
    output: Linear,
    output_norm: Tensor,
}

impl PostNormLayer {
    /// `int8`: quantize the dense layers for that kernel.
    pub fn load(
        vb: &VarBuilder,
        names: &LayerNames,
        dims: &Dims,
        int8: Option<Isa>,
    ) -> Result<Self> {
        let (h, i) = (dims.hidden, dims.intermediate);
        let scale = 1.0 / ((h / dims.heads) as f64).sqrt();
        let linear = |name: &str, factor: f64| -> Result<(Tensor, Tensor)> {
            let w = (vb.pp(name).get((h, h), "weight")? * factor)?;
            let b = (vb.pp(name).get(h, "bias")? * factor)?;
            Ok((w, b))
        };
        let (qw, qb) = linear(names.query, scale)?;
        let (kw, kb) = linear(names.key, 1.0)?;
        let (vw, vb_) = linear(names.value, 1.0)?;
        let dense_norm = |dense: &str, norm: &str, in_dim: usize| -> Result<(Tensor, Tensor)> {
            let weight = vb.pp(dense).get((h, in_dim), "weight")?;
            let bias = vb.pp(dense).get(h, "bias")?;
            let (gamma, beta) = norm_params(&vb.pp(norm), h)?;
            Ok((weight, Tensor::stack(&[bias, gamma, beta], 0)?))
        };
        let (attention_out, attention_norm) =
            dense_norm(names.attention_out, names.attention_norm, h)?;
        let (output, output_norm) = dense_norm(names.output, names.output_norm, i)?;
        Ok(Self {
            qkv_weight: Linear::new(Tensor::cat(&[qw, kw, vw], 0)?, int8)?,
            qkv_bias: Tensor::cat(&[qb, kb, vb_], 0)?,
            attention_out: Linear::new(attention_out, int8)?,
            attention_norm,
            intermediate: Linear::new(vb.pp(names.intermediate).get((i, h), "weight")?, int8)?,
            intermediate_bias: vb.pp(names.intermediate).get(i, "bias")?,
            output: Linear::down_projection(output, int8)?,
            output_norm,
        })
    }

    /// `hidden`: `(batch·seq, hidden)`; `key_bias`: `(batch, seq)`; `position_bias`: an optional
    /// `(heads, seq, seq)` term added to every sequence's attention scores.
    fn forward(
        &self,
        hidden: &Tensor,
        key_bias: &Tensor,
        position_bias: Option<&Tensor>,
        dims: &Dims,
        batch: usize,
    ) -> Result<Tensor> {
        let qkv = self.qkv_weight.forward(hidden)?;
        let context = attention(
            &qkv,
            &self.qkv_bias,
            key_bias,
            position_bias,
            batch,
            dims.heads,
        )?;
        let attention = self.attention_out.forward(&context)?;
        let attended =
            ops::bias_residual_norm(&attention, hidden, &self.attention_norm, dims.eps as f32)?;

        let bias = &self.intermediate_bias;
        let inner = match dims.activation {
            Activation::Gelu => self.intermediate.forward_bias_gelu(&attended, bias)?,
            Activation::GeluTanh => self
                .intermediate
                .forward(&attended)?
                .broadcast_add(bias)?
                .gelu()?,
            Activation::Relu => self
                .intermediate
                .forward(&attended)?
                .broadcast_add(bias)?
                .relu()?,
        };
        let out = self.output.forward(&inner)?;
        ops::bias_residual_norm(&out, &attended, &self.output_norm, dims.eps as f32)
    }
}

/// Embeddings and a stack of post-norm layers.
pub struct PostNormEncoder {
    pub embeddings: TokenEmbeddings,
    pub layers: Vec<PostNormLayer>,
    pub dims: Dims,
}

impl PostNormEncoder {
    /// Loads `dims.layers` layers from `{layer_prefix}.{i}` under `vb`, their dense layers
    /// quantized for `int8`'s kernel if given.
    pub fn load(
        vb: &VarBuilder,
        embeddings: TokenEmbeddings,
        layer_prefix: &str,
        names: &LayerNames,
        dims: Dims,
        int8: Option<Isa>,
    ) -> Result<Self> {
        let layers = (0..dims.layers)
            .map(|i| PostNormLayer::load(&vb.pp(format!("{layer_prefix}.{i}")), names, &dims, int8))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            dims,
        })
    }

    /// Runs a right-padded batch; returns the last hidden states as `(batch, seq, hidden)`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        key_bias: &Tensor,
        position_bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let mut hidden = self.embeddings.forward(input_ids)?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, key_bias, position_bias, &self.dims, batch)?;
        }
        Ok(hidden.reshape((batch, seq, self.dims.hidden))?)
    }
}

/// A layer norm's (gamma, beta), under the `weight/bias` or the original BERT's `gamma/beta` names.
pub fn norm_params(vb: &VarBuilder, size: usize) -> Result<(Tensor, Tensor)> {
    let (w, b) = if vb.contains_tensor("gamma") {
        ("gamma", "beta")
    } else {
        ("weight", "bias")
    };
    Ok((vb.get(size, w)?, vb.get(size, b)?))
}

/// A layer norm loaded with [`norm_params`].
pub fn layer_norm(vb: &VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
    let (gamma, beta) = norm_params(vb, size)?;
    Ok(LayerNorm::new(gamma, beta, eps))
}

/// The part of `vb` that holds `probe`: the root, or the first of `prefixes` that has it
/// (task heads save the encoder under `bert.`, `roberta.`, `mpnet.`, …).
pub fn encoder_root<'a>(vb: VarBuilder<'a>, probe: &str, prefixes: &[&str]) -> VarBuilder<'a> {
    if vb.contains_tensor(probe) {
        return vb;
    }
    prefixes
        .iter()
        .map(|prefix| vb.pp(*prefix))
        .find(|candidate| candidate.contains_tensor(probe))
        .unwrap_or(vb)
}

/// Builds the additive attention bias for a right-padded batch from per-row lengths.
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
