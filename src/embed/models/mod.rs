//! Encoder architectures behind one interface. Each architecture is one file that turns a padded
//! batch of token ids into token states; tokenization, batching, pooling, normalisation, devices
//! and dtypes are the embedder's and shared by all of them.
//!
//! Adding an architecture: write `models/<name>.rs` with its `config.json` fields and an
//! [`Encoder`] implementation (reusing `transformer.rs` where the model is a post-norm encoder),
//! add a variant to [`Architecture`] with its `model_type` name, and build it in
//! [`EncoderConfig::build`].

mod attention;
mod bert;
mod linear;
mod mpnet;
mod ops;
mod qwen3;
mod transformer;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::device::Precision;
use crate::embed::config::read_json;
use crate::error::{Error, Result};
use crate::kernels::int8::Isa;
use crate::model::Pooling;

pub use mpnet::relative_bucket;
pub use transformer::{attention_bias, MASK_BIAS};

/// A sentence encoder's transformer: token ids in, token states out.
pub trait Encoder: Send + Sync {
    fn architecture(&self) -> Architecture;

    /// Runs a right-padded batch. `input_ids`: `(batch, seq)` u32; `attention_bias`:
    /// `(batch, seq)` holding 0 for real tokens and [`MASK_BIAS`] for padding, in the model
    /// dtype (see [`attention_bias`]). Returns the last hidden states, `(batch, seq, hidden)`.
    fn forward(&self, input_ids: &Tensor, attention_bias: &Tensor) -> Result<Tensor>;

    fn hidden_size(&self) -> usize;

    /// Tokens a sequence can hold.
    fn max_positions(&self) -> usize;

    /// The input limit when the model directory sets none.
    fn default_max_length(&self) -> usize {
        self.max_positions()
    }

    fn vocab_size(&self) -> usize;

    /// Floating-point operations per token at sequence length `seq` (2 per multiply-add), for
    /// the benchmark's TFLOP/s.
    fn flops_per_token(&self, seq: usize) -> f64;
}

/// The architectures kroute runs, named as in `config.json`'s `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Architecture {
    #[serde(rename = "bert")]
    Bert,
    #[serde(rename = "roberta")]
    Roberta,
    #[serde(rename = "xlm-roberta")]
    XlmRoberta,
    #[serde(rename = "mpnet")]
    Mpnet,
    #[serde(rename = "qwen3")]
    Qwen3,
}

impl Architecture {
    pub const ALL: [Architecture; 5] = [
        Architecture::Bert,
        Architecture::Roberta,
        Architecture::XlmRoberta,
        Architecture::Mpnet,
        Architecture::Qwen3,
    ];

    /// The `model_type` of `config.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Bert => "bert",
            Architecture::Roberta => "roberta",
            Architecture::XlmRoberta => "xlm-roberta",
            Architecture::Mpnet => "mpnet",
            Architecture::Qwen3 => "qwen3",
        }
    }

    /// The pooling of a model directory that declares none: decoders summarise a text in their
    /// last token, encoders are mean-pooled.
    pub fn default_pooling(self) -> Pooling {
        match self {
            Architecture::Qwen3 => Pooling::Last,
            _ => Pooling::Mean,
        }
    }

    /// The precision when none is asked for: f32 on CPU (half precision is slow there, int8 is
    /// opt-in); on GPUs bf16 for Qwen3 (trained and shipped in bf16, whose range its
    /// activations need) and f16 for the encoders.
    pub fn default_precision(self, device: &Device) -> Precision {
        Precision::Float(match (device, self) {
            (Device::Cpu, _) => DType::F32,
            (_, Architecture::Qwen3) => DType::BF16,
            _ => DType::F16,
        })
    }

    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == model_type)
    }

    /// Every supported `model_type`, for error messages and `--help`.
    pub fn supported() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// A model's `config.json`: its architecture and the raw fields that architecture reads.
pub struct EncoderConfig {
    pub architecture: Architecture,
    json: serde_json::Value,
    path: std::path::PathBuf,
}

impl EncoderConfig {
    /// Reads `config.json` and finds its architecture; a missing file, a missing `model_type` or
    /// an unsupported one is an error naming the file and the supported ones.
    pub fn read(path: &Path) -> Result<Self> {
        let json: serde_json::Value = read_json(path)?
            .ok_or_else(|| Error::Invalid(format!("{}: no such file", path.display())))?;
        let model_type = json
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: no `model_type` (supported: {})",
                    path.display(),
                    Architecture::supported()
                ))
            })?;
        let architecture = Architecture::from_model_type(model_type).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: model_type `{model_type}` is not supported (supported: {})",
                path.display(),
                Architecture::supported()
            ))
        })?;
        Ok(Self {
            architecture,
            json,
            path: path.to_path_buf(),
        })
    }

    /// The architecture's typed configuration; a missing or malformed field names the file and
    /// the field.
    fn typed<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_path_to_error::deserialize(&self.json).map_err(|e| {
            let field = e.path().to_string();
            Error::Invalid(format!(
                "{}: {} config{}: {}",
                self.path.display(),
                self.architecture.as_str(),
                if field == "." {
                    String::new()
                } else {
                    format!(": field `{field}`")
                },
                e.inner()
            ))
        })
    }

    /// Checks the architecture's fields (present, of the right type) before any weight is
    /// read, so that a bad `config.json` is reported without mapping gigabytes of weights.
    pub fn validate(&self) -> Result<()> {
        match self.architecture {
            Architecture::Bert | Architecture::Roberta | Architecture::XlmRoberta => {
                self.typed::<bert::BertConfig>().map(drop)
            }
            Architecture::Mpnet => self.typed::<mpnet::MpnetConfig>().map(drop),
            Architecture::Qwen3 => self.typed::<qwen3::Qwen3Config>().map(drop),
        }
    }

    /// Builds the encoder from the weights under `vb`, its dense layers quantized for `int8`'s
    /// kernel if given.
    pub fn build(&self, vb: VarBuilder, int8: Option<Isa>) -> Result<Box<dyn Encoder>> {
        Ok(match self.architecture {
            arch @ (Architecture::Bert | Architecture::Roberta | Architecture::XlmRoberta) => {
                Box::new(bert::Bert::load(vb, &self.typed()?, arch, int8)?)
            }
            Architecture::Mpnet => Box::new(mpnet::Mpnet::load(vb, &self.typed()?, int8)?),
            Architecture::Qwen3 => Box::new(qwen3::Qwen3::load(vb, &self.typed()?, int8)?),
        })
    }
}

/// Loads the encoder `config` describes from safetensors files (one, or a model's shards),
/// memory-mapped and moved to `device` tensor by tensor; weights that do not fit the
/// configuration are an error naming the files.
pub fn load(
    config: &EncoderConfig,
    weights: &[std::path::PathBuf],
    precision: Precision,
    device: &Device,
) -> Result<Box<dyn Encoder>> {
    let names = match weights {
        [one] => one.display().to_string(),
        _ => format!(
            "the {} weight shards in {}",
            weights.len(),
            weights[0].parent().unwrap_or(Path::new(".")).display()
        ),
    };
    let int8 = supported(precision, device)?;
    let dtype = precision.activations();
    // SAFETY: the weight files are memory-mapped read-only; kroute never writes to them.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(weights, dtype, device) }
        .map_err(|e| Error::Invalid(format!("{names}: {e}")))?;
    config.build(vb, int8).map_err(|e| match e {
        Error::Candle(e) => Error::Invalid(format!(
            "{names} does not match {} ({}): {e}",
            config.path.display(),
            config.architecture.as_str()
        )),
        other => other,
    })
}

/// The encoder `config` describes with placeholder weights (zeros), for benchmarking shapes
/// whose weights are not at hand.
pub fn random(
    config: &EncoderConfig,
    precision: Precision,
    device: &Device,
) -> Result<Box<dyn Encoder>> {
    let int8 = supported(precision, device)?;
    let vars = VarMap::new();
    config.build(
        VarBuilder::from_varmap(&vars, precision.activations(), device),
        int8,
    )
}

/// Refuses what the device cannot compute in, before any weight is read; for int8, returns the
/// kernel this CPU runs.
fn supported(precision: Precision, device: &Device) -> Result<Option<Isa>> {
    match (device, precision) {
        (Device::Cpu, Precision::Int8) => Isa::detect().map(Some).ok_or_else(|| {
            Error::Invalid(
                "--dtype int8 needs an x86-64 CPU with AVX2 (its integer kernels are AVX2, \
                 AVX-VNNI, AVX-512 VNNI and AMX); use f32"
                    .into(),
            )
        }),
        (_, Precision::Int8) => Err(Error::Invalid(
            "--dtype int8 runs on the CPU only; on a GPU use f16 or bf16".into(),
        )),
        (_, Precision::Float(DType::F32 | DType::F16)) => Ok(None),
        (Device::Cpu, Precision::Float(DType::BF16)) => Err(Error::Invalid(
            "--dtype bf16 does not run on the CPU (candle's CPU matmul has no bf16); use f32, \
             f16 or int8"
                .into(),
        )),
        (_, Precision::Float(DType::BF16)) => Ok(None),
        (_, Precision::Float(other)) => Err(Error::Invalid(format!(
            "--dtype {}: the encoders run in f32, f16, bf16 or int8",
            other.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::Architecture;
    use crate::model::registry;

    #[test]
    fn every_registered_model_has_an_architecture_the_embedder_builds() {
        for card in registry() {
            assert!(
                Architecture::from_model_type(&card.architecture).is_some(),
                "{}: architecture {}",
                card.id,
                card.architecture
            );
        }
    }
}
