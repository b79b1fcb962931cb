//! BERT (MiniLM, bge, e5, gte, …) and the RoBERTa family (XLM-RoBERTa: multilingual-e5, bge-m3),
//! which is BERT with positions numbered from `padding_idx + 1` and a single token type.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::transformer::{
    encoder_root, layer_norm, Activation, Dims, LayerNames, PostNormEncoder, TokenEmbeddings,
};
use super::{Architecture, Encoder};
use crate::error::Result;
use crate::kernels::int8::Isa;

/// The fields of a BERT or RoBERTa `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

fn absolute() -> String {
    "absolute".into()
}

const LAYER: LayerNames = LayerNames {
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_out: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
};

pub struct Bert {
    encoder: PostNormEncoder,
    architecture: Architecture,
}

impl Bert {
    /// Loads the weights under `vb` (checkpoints with a `bert.` or `roberta.` prefix too).
    pub fn load(
        vb: VarBuilder,
        config: &BertConfig,
        architecture: Architecture,
        int8: Option<Isa>,
    ) -> Result<Self> {
        if config.position_embedding_type != "absolute" {
            return Err(crate::Error::Invalid(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                config.position_embedding_type
            )));
        }
        let dims = Dims {
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            layers: config.num_hidden_layers,
            eps: config.layer_norm_eps,
            activation: config.hidden_act,
        };
        dims.validate()?;
        let vb = encoder_root(
            vb,
            "embeddings.word_embeddings.weight",
            &["bert", "roberta"],
        );
        let emb = vb.pp("embeddings");
        let h = config.hidden_size;
        // RoBERTa numbers real tokens from padding_idx + 1 (transformers'
        // create_position_ids_from_input_ids); BERT from 0.
        let position_offset = match architecture {
            Architecture::Bert => 0,
            _ => config.pad_token_id + 1,
        };
        let embeddings = TokenEmbeddings::new(
            emb.get((config.vocab_size, h), "word_embeddings.weight")?,
            emb.get(
                (config.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            position_offset,
            Some(
                emb.get((config.type_vocab_size, h), "token_type_embeddings.weight")?
                    .get(0)?,
            ),
            layer_norm(&emb.pp("LayerNorm"), h, config.layer_norm_eps)?,
        )?;
        Ok(Self {
            encoder: PostNormEncoder::load(&vb, embeddings, "encoder.layer", &LAYER, dims, int8)?,
            architecture,
        })
    }
}

impl Encoder for Bert {
    fn architecture(&self) -> Architecture {
        self.architecture
    }

    fn forward(&self, input_ids: &Tensor, attention_bias: &Tensor) -> Result<Tensor> {
        self.encoder.forward(input_ids, attention_bias, None)
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
