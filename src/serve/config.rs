//! `kroute.toml`: where each model is served, and the default routing settings.
//!
//! ```toml
//! [routing]                          # optional; unset keys keep the router's own defaults
//! alpha = 0.6
//!
//! [upstream.default]                 # every model without a block of its own
//! base_url = "https://llm-gateway.example/v1"
//! api_key_env = "GATEWAY_API_KEY"    # name of the env var holding the key
//!
//! [upstream."gpt-4-1106-preview"]    # a model's own block (the router's model name)
//! base_url = "https://other.example/v1"
//! api_key_env = "OTHER_API_KEY"
//! model = "gpt-4-turbo"              # name sent upstream [default: the router's name]
//! timeout_s = 60
//! price = { input_per_mtok = 10.0, output_per_mtok = 30.0 }
//! headers = { "OpenAI-Organization" = "org-123" }
//! ```
//!
//! A model's block takes the default block's settings for the keys it leaves out, except that
//! a block with its own `base_url` inherits neither `api_key_env` nor `headers`: a key is never
//! sent to a host it was not configured for. `[tenants.NAME]` blocks give teams their own
//! policy ([`super::tenants`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::tenants::{TenantBlock, Tenants};
use crate::error::{Error, InputError, Result};
pub use crate::router::Price;
use crate::router::{Repriced, RouteParams, Router};

const DEFAULT_BLOCK: &str = "default";
const DEFAULT_TIMEOUT_S: f64 = 60.0;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    routing: RoutingBlock,
    #[serde(default)]
    upstream: BTreeMap<String, UpstreamBlock>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantBlock>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingBlock {
    alpha: Option<f64>,
    top_p: Option<usize>,
    beta: Option<f64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamBlock {
    base_url: Option<String>,
    api_key_env: Option<String>,
    model: Option<String>,
    timeout_s: Option<f64>,
    price: Option<Price>,
    headers: Option<BTreeMap<String, String>>,
}

/// An API key; shown as `***` by `Debug` so it cannot end up in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where and how one model is called.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `.../v1`; requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    pub api_key: Option<ApiKey>,
    /// The model name sent upstream.
    pub model: String,
    pub timeout: Duration,
    pub price: Option<Price>,
    pub headers: Vec<(String, String)>,
}

/// The parsed configuration, checked against the router's models.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Every servable model (the router's, then other blocks') and its upstream.
    pub upstreams: BTreeMap<String, Upstream>,
    /// Routing for `model: "kroute"`.
    pub routing: RouteParams,
    /// Prices set in router models' own blocks: they also reprice routing where the router has
    /// token counts ([`ServeConfig::reprice`]). A default block's price only counts spend.
    pub model_prices: BTreeMap<String, Price>,
    /// The `[tenants.*]` blocks and their client keys.
    pub tenants: Tenants,
}

impl ServeConfig {
    /// Reads `path`; `models` are the router's and `defaults` its routing settings. Env vars are
    /// read through `env` (the process environment in production).
    pub fn load(
        path: &Path,
        models: &[String],
        defaults: RouteParams,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ServeConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path, models, defaults, env)
    }

    /// [`ServeConfig::load`] from text; `path` names the file in errors.
    pub fn parse(
        text: &str,
        path: &Path,
        models: &[String],
        defaults: RouteParams,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ServeConfig> {
        let invalid = |message: String| Error::from(InputError::new(path, message));
        let file: ConfigFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;

        let mut routing = defaults;
        if let Some(alpha) = file.routing.alpha {
            routing.scoring = routing.scoring.at_alpha(alpha);
        }
        routing.top_p = file.routing.top_p.unwrap_or(routing.top_p);
        routing.beta = file.routing.beta.unwrap_or(routing.beta);
        routing
            .validate()
            .map_err(|e| invalid(format!("[routing]: {e}")))?;

        let default = file.upstream.get(DEFAULT_BLOCK);
        if default.is_some_and(|block| block.model.is_some()) {
            return Err(invalid(
                "[upstream.default]: `model` renames one model; put it in that model's block"
                    .into(),
            ));
        }
        let others = file
            .upstream
            .keys()
            .filter(|name| *name != DEFAULT_BLOCK && !models.contains(name));
        let mut upstreams = BTreeMap::new();
        for name in models.iter().chain(others) {
            let block = match (file.upstream.get(name), default) {
                (Some(own), Some(default)) => own.over(default),
                (Some(own), None) => own.clone(),
                (None, Some(default)) => default.clone(),
                (None, None) => {
                    return Err(invalid(format!(
                        "router model `{name}` has no upstream: add [upstream.default] or \
                         [upstream.\"{name}\"]"
                    )))
                }
            };
            let upstream = block
                .resolve(name, &env)
                .map_err(|e| invalid(format!("{}: {e}", block_name(name, &file.upstream))))?;
            upstreams.insert(name.clone(), upstream);
        }
        let model_prices = models
            .iter()
            .filter_map(|name| Some((name.clone(), file.upstream.get(name)?.price?)))
            .collect();
        let tenants = Tenants::resolve(&file.tenants, &|m| upstreams.contains_key(m), &env)
            .map_err(invalid)?;
        Ok(ServeConfig {
            upstreams,
            routing,
            model_prices,
            tenants,
        })
    }

    /// Recomputes `router`'s costs at the prices of the models' own blocks, for the models it
    /// has token counts for (others keep their trained costs, with a warning).
    pub fn reprice(&self, router: &mut Router) -> Result<Vec<Repriced>> {
        let with_tokens = router.models_with_tokens();
        let (prices, without): (BTreeMap<_, _>, BTreeMap<_, _>) = self
            .model_prices
            .iter()
            .map(|(model, price)| (model.clone(), *price))
            .partition(|(model, _)| with_tokens.contains(&model.as_str()));
        for model in without.keys() {
            tracing::warn!(
                "the price of `{model}` in the config counts spend but does not reprice routing: \
                 the router has no token counts for it"
            );
        }
        if prices.is_empty() {
            return Ok(Vec::new());
        }
        router.reprice(&prices)
    }
}

fn block_name(model: &str, blocks: &BTreeMap<String, UpstreamBlock>) -> String {
    if blocks.contains_key(model) {
        format!("[upstream.\"{model}\"]")
    } else {
        "[upstream.default]".into()
    }
}

impl UpstreamBlock {
    /// This block with `default`'s settings where it has none.
    fn over(&self, default: &UpstreamBlock) -> UpstreamBlock {
        let same_host = self.base_url.is_none();
        UpstreamBlock {
            base_url: self.base_url.clone().or_else(|| default.base_url.clone()),
            api_key_env: match same_host {
                true => self
                    .api_key_env
                    .clone()
                    .or_else(|| default.api_key_env.clone()),
                false => self.api_key_env.clone(),
            },
            model: self.model.clone(),
            timeout_s: self.timeout_s.or(default.timeout_s),
            price: self.price.or(default.price),
            headers: match same_host {
                true => self.headers.clone().or_else(|| default.headers.clone()),
                false => self.headers.clone(),
            },
        }
    }

    fn resolve(
        &self,
        name: &str,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Upstream, String> {
        let base_url = self
            .base_url
            .as_deref()
            .ok_or("`base_url` is missing")?
            .trim_end_matches('/')
            .to_string();
        let url =
            reqwest::Url::parse(&base_url).map_err(|e| format!("`base_url` {base_url:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "`base_url` {base_url:?}: expected http:// or https://"
            ));
        }
        let api_key = match &self.api_key_env {
            Some(var) => match env(var) {
                Some(key) if !key.is_empty() => Some(ApiKey(key)),
                _ => {
                    return Err(format!(
                        "environment variable {var} (api_key_env) is not set"
                    ))
                }
            },
            None => None,
        };
        let timeout_s = self.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
        if !(timeout_s > 0.0 && timeout_s.is_finite()) {
            return Err(format!(
                "`timeout_s` must be a positive number of seconds, got {timeout_s}"
            ));
        }
        let headers = self.headers.clone().unwrap_or_default();
        for (header, value) in &headers {
            reqwest::header::HeaderName::try_from(header.as_str())
                .map_err(|_| format!("headers: `{header}` is not a valid header name"))?;
            reqwest::header::HeaderValue::try_from(value.as_str()).map_err(|_| {
                format!("headers: the value of `{header}` is not a valid header value")
            })?;
        }
        Ok(Upstream {
            base_url,
            api_key,
            model: self.model.clone().unwrap_or_else(|| name.to_string()),
            timeout: Duration::from_secs_f64(timeout_s),
            price: self.price,
            headers: headers.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> Vec<String> {
        vec!["gpt-4".into(), "mixtral".into()]
    }

    fn env(var: &str) -> Option<String> {
        match var {
            "GATEWAY_KEY" => Some("sk-gateway".into()),
            "OTHER_KEY" => Some("sk-other".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<ServeConfig> {
        ServeConfig::parse(
            text,
            Path::new("kroute.toml"),
            &models(),
            RouteParams::default(),
            env,
        )
    }

    #[test]
    fn model_blocks_inherit_from_default_but_keys_stay_with_their_host() {
        let config = parse(
            r#"
            [routing]
            alpha = 0.8
            [upstream.default]
            base_url = "https://gateway.example/v1/"
            api_key_env = "GATEWAY_KEY"
            timeout_s = 30
            headers = { "X-Team" = "routing" }
            [upstream."gpt-4"]
            model = "gpt-4-turbo"
            price = { input_per_mtok = 10.0, output_per_mtok = 30.0 }
            [upstream.mixtral]
            base_url = "http://other.example/v1"
            [upstream.extra]
            base_url = "http://extra.example/v1"
            api_key_env = "OTHER_KEY"
            "#,
        )
        .unwrap();
        assert_eq!(config.routing.scoring.alpha(), 0.8);
        let gpt4 = &config.upstreams["gpt-4"];
        assert_eq!(gpt4.base_url, "https://gateway.example/v1");
        assert_eq!(gpt4.model, "gpt-4-turbo");
        assert_eq!(gpt4.api_key.as_ref().unwrap().expose(), "sk-gateway");
        assert_eq!(gpt4.timeout, Duration::from_secs(30));
        assert_eq!(
            gpt4.headers,
            [("X-Team".to_string(), "routing".to_string())]
        );
        assert_eq!(gpt4.price.unwrap().cost(1_000_000, 0), 10.0);
        let mixtral = &config.upstreams["mixtral"];
        assert_eq!(mixtral.model, "mixtral");
        assert!(mixtral.api_key.is_none() && mixtral.headers.is_empty());
        assert_eq!(mixtral.timeout, Duration::from_secs(30));
        // A block for a model the router does not know can still be called by name.
        assert_eq!(
            config.upstreams["extra"].api_key.as_ref().unwrap().expose(),
            "sk-other"
        );
        // Keys never show in debug output.
        let debug = format!("{config:?}");
        assert!(!debug.contains("sk-gateway") && debug.contains("***"));
    }

    #[test]
    fn startup_errors_name_the_block_and_the_fix() {
        let error = |text: &str| parse(text).unwrap_err().to_string();
        let only_gpt4 = "[upstream.\"gpt-4\"]\nbase_url = \"http://a.example/v1\"\n";
        assert_eq!(
            error(only_gpt4),
            "kroute.toml: router model `mixtral` has no upstream: add [upstream.default] or \
             [upstream.\"mixtral\"]"
        );
        let missing_env =
            "[upstream.default]\nbase_url = \"http://a.example\"\napi_key_env = \"NOPE\"\n";
        assert_eq!(
            error(missing_env),
            "kroute.toml: [upstream.default]: environment variable NOPE (api_key_env) is not set"
        );
        assert!(error("[upstream.default]\nbase_url = \"ftp://a\"\n").contains("http://"));
        assert!(error("[upstream.default]\napi_key_env = \"GATEWAY_KEY\"\n").contains("base_url"));
        assert!(
            error("[upstream.default]\nbase_url = \"http://a\"\ntimeout_s = 0\n")
                .contains("timeout_s")
        );
        assert!(
            error("[upstream.default]\nbase_url = \"http://a\"\nmodel = \"x\"\n")
                .contains("that model's block")
        );
        assert!(
            error("[upstream.default]\nbase_url = \"http://a\"\nbase_ur = \"x\"\n")
                .contains("unknown field")
        );
        assert!(
            error("[routing]\nalpha = 1.5\n[upstream.default]\nbase_url = \"http://a\"\n")
                .contains("[routing]")
        );
        // The located TOML syntax error.
        assert!(error("[upstream.default\n").contains("line 1"));
    }
}
