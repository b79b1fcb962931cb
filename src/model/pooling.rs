//! How an encoder's token states become one vector: a property of the model (its card, its
//! `1_Pooling/config.json`) that the embedder applies.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean of the token states under the attention mask (MiniLM, MPNet, e5, gte).
    Mean,
    /// The first token's state, `[CLS]` or `<s>` (bge).
    Cls,
    /// The last real token's state (decoder embedders such as Qwen3-Embedding).
    Last,
}

impl Pooling {
    pub const ALL: [Pooling; 3] = [Pooling::Mean, Pooling::Cls, Pooling::Last];

    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::Invalid(format!("pooling `{s}`: expected mean, cls or last")))
    }
}
