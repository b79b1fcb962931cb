//! Qwen3 as a sentence encoder (Qwen3-Embedding 0.6B / 4B / 8B): a pre-norm decoder with
//! causal grouped-query self-attention, per-head RMSNorm of queries and keys, rotary position
//! embeddings, a SwiGLU feed-forward and a final RMSNorm, run once over the whole input (no KV
//! cache). The sentence vector is the last real token's state (last-token pooling).
//!
//! Batches are right-padded like every other encoder's: with causal attention a real token
//! never sees the padding after it, and rotary embeddings depend only on relative positions, so
//! the vectors equal those of the left-padded batches the model's tokenizer asks for.
//!
//! Work saved over a generic implementation: Q, K and V are one matmul and so are the gate and
//! up projections; the 1/√d attention scale is folded into the query norm's weight (RoPE is a
//! rotation, so scaling before it is scaling after it); the query heads that share a key/value
//! head are stacked into one matmul instead of copying K and V per head.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, VarBuilder};
use serde::Deserialize;

use super::linear::Linear;
use super::ops;
use super::transformer::{encoder_root, MASK_BIAS};
use super::{Architecture, Encoder};
use crate::error::{Error, Result};
use crate::kernels::int8::Isa;

/// The longest input when the model directory sets no limit: far below Qwen3's 32k positions,
/// because attention memory grows with the square of the length; Qwen's own examples embed up
/// to 8192 tokens.
pub const DEFAULT_MAX_LENGTH: usize = 8192;

/// Rotary tables are built once for this many positions at most (Qwen3's 32k).
const MAX_ROTARY_POSITIONS: usize = 1 << 15;

#[derive(Debug, Clone, Deserialize)]
pub struct Qwen3Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    pub rope_theta: Option<f64>,
    /// transformers ≥ 5 writes `rope_theta` here.
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "silu")]
    pub hidden_act: String,
    #[serde(default)]
    pub use_sliding_window: bool,
    pub rope_scaling: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RopeParameters {
    pub rope_theta: Option<f64>,
    pub rope_type: Option<String>,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

fn silu() -> String {
    "silu".into()
}

/// The shapes of a Qwen3 model, validated.
#[derive(Debug, Clone, Copy)]
struct Shape {
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f64,
}

impl Qwen3Config {
    fn shape(&self) -> Result<Shape> {
        let invalid = |msg: String| Err(Error::Invalid(msg));
        if self.hidden_act != "silu" {
            return invalid(format!(
                "hidden_act `{}` is not supported (Qwen3 uses silu)",
                self.hidden_act
            ));
        }
        if self.use_sliding_window {
            return invalid("use_sliding_window is not supported".into());
        }
        let rope_type = self
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_type.as_deref());
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null())
            || rope_type.is_some_and(|t| t != "default")
        {
            return invalid("scaled rotary embeddings (rope_scaling) are not supported".into());
        }
        let heads = self.num_attention_heads;
        let kv_heads = self.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return invalid(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            ));
        }
        let head_dim = match self.head_dim {
            Some(d) => d,
            None if self.hidden_size.is_multiple_of(heads) => self.hidden_size / heads,
            None => {
                return invalid(format!(
                    "hidden_size {} is not a multiple of num_attention_heads {heads} and there is no head_dim",
                    self.hidden_size
                ))
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return invalid(format!(
                "head_dim {head_dim} must be even (rotary embeddings rotate pairs)"
            ));
        }
        Ok(Shape {
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            layers: self.num_hidden_layers,
            heads,
            kv_heads,
            head_dim,
            eps: self.rms_norm_eps,
        })
    }

    fn rope_theta(&self) -> Result<f64> {
        self.rope_theta
            .or(self.rope_parameters.as_ref().and_then(|r| r.rope_theta))
            .ok_or_else(|| Error::Invalid("no rope_theta (nor rope_parameters.rope_theta)".into()))
    }
}

struct Layer {
    input_norm: Tensor,
    /// `(heads + 2·kv_heads)·head_dim × hidden`: Q, K and V stacked.
    qkv: Linear,
    qkv_bias: Option<Tensor>,
    /// The query norm's weight times 1/√head_dim.
    q_norm: Tensor,
    k_norm: Tensor,
    o: Linear,
    post_norm: Tensor,
    /// `2·intermediate × hidden`: gate and up stacked.
    gate_up: Linear,
    down: Linear,
}

pub struct Qwen3 {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: Tensor,
    /// `(positions, head_dim / 2)` rotary tables in the model dtype.
    cos: Tensor,
    sin: Tensor,
    shape: Shape,
    max_positions: usize,
}

impl Qwen3 {
    /// Loads the weights under `vb` (checkpoints with a `model.` prefix too).
    pub fn load(vb: VarBuilder, config: &Qwen3Config, int8: Option<Isa>) -> Result<Self> {
        let shape = config.shape()?;
        let theta = config.rope_theta()?;
        let vb = encoder_root(vb, "embed_tokens.weight", &["model"]);
        let (h, d) = (shape.hidden, shape.head_dim);
        let (q_out, kv_out) = (shape.heads * d, shape.kv_heads * d);
        let embed = Embedding::new(vb.get((config.vocab_size, h), "embed_tokens.weight")?, h);
        let scale = 1.0 / (d as f64).sqrt();
        let layers = (0..shape.layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                let attn = vb.pp("self_attn");
                let mlp = vb.pp("mlp");
                let qkv = Tensor::cat(
                    &[
                        attn.get((q_out, h), "q_proj.weight")?,
                        attn.get((kv_out, h), "k_proj.weight")?,
                        attn.get((kv_out, h), "v_proj.weight")?,
                    ],
                    0,
                )?;
                let qkv_bias = if config.attention_bias {
                    Some(Tensor::cat(
                        &[
                            attn.get(q_out, "q_proj.bias")?,
                            attn.get(kv_out, "k_proj.bias")?,
                            attn.get(kv_out, "v_proj.bias")?,
                        ],
                        0,
                    )?)
                } else {
                    None
                };
                Ok(Layer {
                    input_norm: vb.get(h, "input_layernorm.weight")?,
                    qkv: Linear::new(qkv, int8)?,
                    qkv_bias,
                    q_norm: (attn.get(d, "q_norm.weight")? * scale)?,
                    k_norm: attn.get(d, "k_norm.weight")?,
                    o: Linear::new(attn.get((h, q_out), "o_proj.weight")?, int8)?,
                    post_norm: vb.get(h, "post_attention_layernorm.weight")?,
                    gate_up: Linear::new(
                        Tensor::cat(
                            &[
                                mlp.get((shape.intermediate, h), "gate_proj.weight")?,
                                mlp.get((shape.intermediate, h), "up_proj.weight")?,
                            ],
                            0,
                        )?,
                        int8,
                    )?,
                    down: Linear::down_projection(
                        mlp.get((h, shape.intermediate), "down_proj.weight")?,
                        int8,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = vb.get(h, "norm.weight")?;
        let dtype = norm.dtype();
        let max_positions = config.max_position_embeddings;
        let (cos, sin) = rotary_tables(
            max_positions.min(MAX_ROTARY_POSITIONS),
            d,
            theta,
            dtype,
            norm.device(),
        )?;
        Ok(Self {
            embed,
            layers,
            norm,
            cos,
            sin,
            shape,
            max_positions,
        })
    }

    fn layer(
        &self,
        layer: &Layer,
        x: &Tensor,
        key_bias: &Tensor,
        causal: &Tensor,
        (batch, seq): (usize, usize),
    ) -> Result<Tensor> {
        let s = self.shape;
        let (d, eps) = (s.head_dim, s.eps as f32);
        let h = candle_nn::ops::rms_norm(x, &layer.input_norm, eps)?;
        let mut qkv = layer.qkv.forward(&h)?;
        if let Some(bias) = &layer.qkv_bias {
            qkv = qkv.broadcast_add(bias)?;
        }
        // Columns [start, start + count) heads of (batch·seq, ·) → (batch, count, seq, d), each
        // head's vector RMS-normalised when a norm is given.
        let heads = |start: usize, count: usize, norm: Option<&Tensor>| -> Result<Tensor> {
            let mut part = qkv
                .narrow(1, start * d, count * d)?
                .reshape((batch, seq, count, d))?
                .contiguous()?;
            if let Some(norm) = norm {
                part = candle_nn::ops::rms_norm(&part, norm, eps)?;
            }
            Ok(part.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(0, s.heads, Some(&layer.q_norm))?;
        let k = heads(s.heads, s.kv_heads, Some(&layer.k_norm))?;
        let v = heads(s.heads + s.kv_heads, s.kv_heads, None)?;
        let (cos, sin) = (self.cos.narrow(0, 0, seq)?, self.sin.narrow(0, 0, seq)?);
        let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;

        // The query heads of one key/value head as one block of group·seq rows.
        let group = s.heads / s.kv_heads;
        let q = q.reshape((batch, s.kv_heads, group * seq, d))?;
        let scores = q.matmul(&k.t()?)?;
        let probs = ops::masked_softmax(&scores, key_bias, Some(causal))?;
        let context = probs
            .matmul(&v)?
            .reshape((batch, s.heads, seq, d))?
            .transpose(1, 2)?
            .reshape((batch * seq, s.heads * d))?;
        let x = (x + layer.o.forward(&context)?)?;

        let h = candle_nn::ops::rms_norm(&x, &layer.post_norm, eps)?;
        let gate_up = layer.gate_up.forward(&h)?;
        let gate = gate_up.narrow(D::Minus1, 0, s.intermediate)?;
        let up = gate_up.narrow(D::Minus1, s.intermediate, s.intermediate)?;
        let inner = (candle_nn::ops::silu(&gate)? * up)?;
        Ok((x + layer.down.forward(&inner)?)?)
    }
}

/// cos and sin of position × inverse frequency, `(positions, head_dim / 2)`, computed in f32 as
/// transformers does and stored in `dtype`.
fn rotary_tables(
    positions: usize,
    head_dim: usize,
    theta: f64,
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let angles: Vec<f32> = (0..positions)
        .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
        .collect();
    let table = |f: fn(f32) -> f32| -> Result<Tensor> {
        let values: Vec<f32> = angles.iter().map(|&a| f(a)).collect();
        Ok(Tensor::from_vec(values, (positions, half), device)?.to_dtype(dtype)?)
    };
    Ok((table(f32::cos)?, table(f32::sin)?))
}

/// `(group·seq, seq)`: 0 where a key is at or before the query's position, [`MASK_BIAS`] after
/// it, for `group` stacked copies of the `seq` query positions.
fn causal_bias(group: usize, seq: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mut bias = vec![0f32; group * seq * seq];
    for (row, values) in bias.chunks_exact_mut(seq).enumerate() {
        values[row % seq + 1..].fill(MASK_BIAS);
    }
    Ok(Tensor::from_vec(bias, (group * seq, seq), device)?.to_dtype(dtype)?)
}

impl Encoder for Qwen3 {
    fn architecture(&self) -> Architecture {
        Architecture::Qwen3
    }

    fn forward(&self, input_ids: &Tensor, attention_bias: &Tensor) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        if seq > self.cos.dim(0)? {
            return Err(Error::Invalid(format!(
                "{seq} tokens exceed the {} positions kroute prepares for Qwen3",
                self.cos.dim(0)?
            )));
        }
        let group = self.shape.heads / self.shape.kv_heads;
        let causal = causal_bias(group, seq, attention_bias.dtype(), input_ids.device())?;
        let mut x = self.embed.forward(&input_ids.flatten_all()?)?;
        for layer in &self.layers {
            x = self.layer(layer, &x, attention_bias, &causal, (batch, seq))?;
        }
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.shape.eps as f32)?;
        Ok(x.reshape((batch, seq, self.shape.hidden))?)
    }

    fn hidden_size(&self) -> usize {
        self.shape.hidden
    }

    fn max_positions(&self) -> usize {
        self.max_positions.min(self.cos.dim(0).unwrap_or(0))
    }

    fn default_max_length(&self) -> usize {
        self.max_positions().min(DEFAULT_MAX_LENGTH)
    }

    fn vocab_size(&self) -> usize {
        self.embed.embeddings().dim(0).unwrap_or(0)
    }

    fn flops_per_token(&self, seq: usize) -> f64 {
        let s = self.shape;
        let (q, kv) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let dense = s.hidden * (q + 2 * kv) + q * s.hidden + 3 * s.hidden * s.intermediate;
        let attention = 2 * seq * q; // QKᵀ and AV over every key (the causal half is masked, not skipped)
        (2 * s.layers * (dense + attention)) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_bias_masks_later_keys_in_every_group() {
        let bias = causal_bias(2, 3, DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let m = MASK_BIAS;
        let one = [[0.0, m, m], [0.0, 0.0, m], [0.0, 0.0, 0.0]];
        assert_eq!(bias[..3], one);
        assert_eq!(bias[3..], one);
    }
}
