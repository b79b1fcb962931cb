//! Teams behind one server. `[tenants.NAME]` blocks in `kroute.toml` give each team its own
//! client keys and policy; a request's key picks its tenant (a key of no tenant gets the
//! server's default policy), and a request may narrow its tenant's policy, never widen it.
//!
//! ```toml
//! [tenants.research]
//! api_keys_env = "RESEARCH_KEYS"      # env var holding the tenant's client keys, comma-separated
//! alpha = 0.8                         # its default α, and the most a request may ask for
//! allowed_models = ["gpt-4-1106-preview", "mixtral-8x7b-chat"]
//! max_cost_per_request = 0.02         # dollars, as the router expects the query to cost
//! budget_usd = 50.0
//! budget_period = "1d"                # any duration (30m, 12h, 7d); periods start at
//!                                     # multiples of it since the Unix epoch [default: 1d]
//! on_budget_exhausted = "cheapest"    # or "reject" (429) [default: cheapest]
//! max_ttft_ms = 2000                  # skip models whose recent p90 time to first byte is above
//! latency_weight = 0.2                # weight of latency beside accuracy and cost, in [0, 1]
//! ```
//!
//! A request narrows with `model: "kroute:alpha=0.3"` (at most the tenant's α), the headers
//! `x-kroute-models: a,b` (a subset of the allowed models), `x-kroute-max-cost: 0.01` (at most
//! the tenant's ceiling), `x-kroute-max-ttft-ms: 800` (at most the tenant's) and
//! `x-kroute-latency-weight: 0.5` (at least the tenant's). With a budget, the tenant's α is
//! paced ([`crate::budget`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use serde::Deserialize;
use subtle::{Choice, ConstantTimeEq};

use super::openai::ApiError;
use crate::budget::{Budget, OnExhausted, Pace};
use crate::engine::Limits;
use crate::router::RouteParams;

/// The name metrics and logs give requests of no tenant.
pub const DEFAULT_TENANT: &str = "default";
/// Request headers that narrow a policy.
pub const MODELS_HEADER: &str = "x-kroute-models";
pub const MAX_COST_HEADER: &str = "x-kroute-max-cost";
pub const MAX_TTFT_HEADER: &str = "x-kroute-max-ttft-ms";
pub const LATENCY_WEIGHT_HEADER: &str = "x-kroute-latency-weight";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantBlock {
    api_keys_env: String,
    alpha: Option<f64>,
    allowed_models: Option<Vec<String>>,
    max_cost_per_request: Option<f64>,
    budget_usd: Option<f64>,
    budget_period: Option<String>,
    on_budget_exhausted: Option<OnExhausted>,
    max_ttft_ms: Option<f64>,
    latency_weight: Option<f64>,
}

/// One tenant's policy.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    /// Its default α and the most a request may ask for (`None`: the server's).
    pub alpha: Option<f64>,
    /// The models it may use (`None`: all).
    pub allowed: Option<Arc<BTreeSet<String>>>,
    /// The most a request may be expected to cost, in dollars.
    pub max_cost: Option<f64>,
    pub budget: Option<Budget>,
    /// Skip models whose recent p90 time to first byte is above this (milliseconds).
    pub max_ttft_ms: Option<f64>,
    /// Weight of latency beside the router's score ([`Limits::latency_weight`]).
    pub latency_weight: f64,
}

/// Every tenant and the digests of their client keys.
#[derive(Debug, Default, Clone)]
pub struct Tenants {
    by_name: BTreeMap<String, Arc<Tenant>>,
    keys: Vec<([u8; 32], Arc<Tenant>)>,
}

impl Tenants {
    /// Checks the blocks against the servable models and reads their keys through `env`.
    pub(super) fn resolve(
        blocks: &BTreeMap<String, TenantBlock>,
        servable: &impl Fn(&str) -> bool,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Tenants, String> {
        let mut tenants = Tenants::default();
        for (name, block) in blocks {
            let tenant = Arc::new(
                block
                    .resolve(name, servable)
                    .map_err(|e| format!("[tenants.{name}]: {e}"))?,
            );
            let keys = env(&block.api_keys_env).unwrap_or_default();
            let keys: Vec<&str> = keys
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .collect();
            if keys.is_empty() {
                return Err(format!(
                    "[tenants.{name}]: environment variable {} (api_keys_env) is not set or \
                     holds no key",
                    block.api_keys_env
                ));
            }
            for key in keys {
                let digest = super::digest(key);
                if let Some((_, other)) = tenants.keys.iter().find(|(d, _)| *d == digest) {
                    return Err(format!(
                        "[tenants.{name}]: a key of {} is also a key of tenant `{}`",
                        block.api_keys_env, other.name
                    ));
                }
                tenants.keys.push((digest, tenant.clone()));
            }
            tenants.by_name.insert(name.clone(), tenant);
        }
        Ok(tenants)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_name.values()
    }

    /// The tenant whose key has this digest; every key's digest is compared in full, in
    /// constant time.
    pub fn by_key(&self, presented: &[u8; 32]) -> Option<Arc<Tenant>> {
        let mut found = None;
        for (digest, tenant) in &self.keys {
            let same: Choice = digest.ct_eq(presented);
            if bool::from(same) {
                found = Some(tenant.clone());
            }
        }
        found
    }
}

impl TenantBlock {
    fn resolve(&self, name: &str, servable: &impl Fn(&str) -> bool) -> Result<Tenant, String> {
        if name == DEFAULT_TENANT || name.is_empty() || !name.chars().all(valid_name_char) {
            return Err(format!(
                "a tenant's name is letters, digits, `-` and `_`, and not `{DEFAULT_TENANT}`"
            ));
        }
        for (field, value) in [
            ("alpha", self.alpha),
            ("latency_weight", self.latency_weight),
        ] {
            if let Some(value) = value.filter(|v| !(0.0..=1.0).contains(v)) {
                return Err(format!("`{field}` must be in [0, 1], got {value}"));
            }
        }
        if let Some(ms) = self.max_ttft_ms.filter(|ms| !(*ms > 0.0 && ms.is_finite())) {
            return Err(format!(
                "`max_ttft_ms` must be a positive number of milliseconds, got {ms}"
            ));
        }
        let allowed = match &self.allowed_models {
            None => None,
            Some(models) => {
                if models.is_empty() {
                    return Err(
                        "`allowed_models` is empty; leave it out to allow every model".into(),
                    );
                }
                if let Some(unknown) = models.iter().find(|m| !servable(m)) {
                    return Err(format!(
                        "`allowed_models` names `{unknown}`, which is neither a router model nor \
                         an [upstream] block"
                    ));
                }
                Some(Arc::new(models.iter().cloned().collect()))
            }
        };
        let positive = |field: &str, value: Option<f64>| match value {
            Some(v) if !(v > 0.0 && v.is_finite()) => Err(format!(
                "`{field}` must be a positive number of dollars, got {v}"
            )),
            _ => Ok(value),
        };
        let max_cost = positive("max_cost_per_request", self.max_cost_per_request)?;
        let budget = match positive("budget_usd", self.budget_usd)? {
            None if self.budget_period.is_some() || self.on_budget_exhausted.is_some() => {
                return Err("`budget_period` and `on_budget_exhausted` need `budget_usd`".into())
            }
            None => None,
            Some(usd) => {
                let period = match &self.budget_period {
                    None => Duration::from_secs(24 * 3600),
                    Some(text) => humantime::parse_duration(text).map_err(|e| {
                        format!("`budget_period` {text:?}: {e} (e.g. 30m, 12h, 1d)")
                    })?,
                };
                if period < Duration::from_secs(1) {
                    return Err("`budget_period` must be at least 1s".into());
                }
                Some(Budget {
                    usd,
                    period,
                    on_exhausted: self.on_budget_exhausted.unwrap_or_default(),
                })
            }
        };
        Ok(Tenant {
            name: name.to_string(),
            alpha: self.alpha,
            allowed,
            max_cost,
            budget,
            max_ttft_ms: self.max_ttft_ms,
            latency_weight: self.latency_weight.unwrap_or(0.0),
        })
    }
}

fn valid_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// The tenant a request runs as (`None`: the default policy), as the key check found it.
#[derive(Debug, Clone, Default)]
pub struct RequestTenant(pub Option<Arc<Tenant>>);

/// A tenant's budget as of a request.
#[derive(Debug, Clone, Copy)]
pub struct BudgetNow {
    /// The current period's start (ms since the epoch): spend is charged to it.
    pub period_ms: u64,
    pub pace: Pace,
    pub on_exhausted: OnExhausted,
}

impl RequestTenant {
    pub fn name(&self) -> &str {
        self.0.as_ref().map_or(DEFAULT_TENANT, |t| &t.name)
    }

    /// The server's routing settings with the tenant's α as the default.
    pub fn defaults(&self, server: RouteParams) -> RouteParams {
        match self.0.as_ref().and_then(|t| t.alpha) {
            Some(alpha) => RouteParams {
                scoring: server.scoring.at_alpha(alpha),
                ..server
            },
            None => server,
        }
    }

    /// Where the tenant's budget stands at `now_ms`, given what it `spent` in a period; `None`
    /// without a budget. `alpha` is the tenant's own (the pacer lowers it).
    pub fn budget_now(
        &self,
        now_ms: u64,
        alpha: f64,
        spent: impl Fn(&str, u64) -> f64,
    ) -> Option<BudgetNow> {
        let tenant = self.0.as_ref()?;
        let budget = tenant.budget?;
        let (period_ms, elapsed) = budget.period_at(now_ms);
        Some(BudgetNow {
            period_ms,
            pace: budget.pace(alpha, spent(&tenant.name, period_ms), elapsed),
            on_exhausted: budget.on_exhausted,
        })
    }

    /// The routing of a request that asked for `asked` (its `model` read against
    /// [`RequestTenant::defaults`]): α at most the tenant's, lowered by the pacer under a
    /// budget (0 once it is spent, or 429 with `on_budget_exhausted = "reject"`).
    pub fn routing(
        &self,
        asked: RouteParams,
        budget: Option<&BudgetNow>,
    ) -> Result<RouteParams, ApiError> {
        let alpha = asked.scoring.alpha();
        if let Some(max) = self.0.as_ref().and_then(|t| t.alpha) {
            if alpha > max {
                return Err(not_allowed(format!(
                    "alpha={alpha} is above tenant `{}`'s alpha of {max}",
                    self.name()
                )));
            }
        }
        let Some(budget) = budget else {
            return Ok(asked);
        };
        self.check_budget(budget)?;
        Ok(RouteParams {
            scoring: asked.scoring.at_alpha(alpha.min(budget.pace.alpha)),
            ..asked
        })
    }

    /// Refuses a request of a tenant whose budget is spent and who is refused then.
    pub fn check_budget(&self, budget: &BudgetNow) -> Result<(), ApiError> {
        match (budget.pace.exhausted, budget.on_exhausted) {
            (true, OnExhausted::Reject) => Err(ApiError::overloaded(format!(
                "tenant `{}` has spent its budget for this period (${:.4}); it renews with the \
                 next period",
                self.name(),
                budget.pace.spent
            ))
            .code("budget_exhausted")),
            _ => Ok(()),
        }
    }

    /// Refuses a directly named model the tenant may not use.
    pub fn check_model(&self, model: &str) -> Result<(), ApiError> {
        match self.0.as_ref().and_then(|t| t.allowed.as_ref()) {
            Some(allowed) if !allowed.contains(model) => Err(not_allowed(format!(
                "tenant `{}` may not use `{model}`; its models are {}",
                self.name(),
                list(allowed)
            ))),
            _ => Ok(()),
        }
    }

    /// The tenant's limits narrowed by the request's headers; a header that would widen them is
    /// refused, naming it.
    pub fn limits(&self, headers: &HeaderMap) -> Result<Limits, ApiError> {
        let tenant = self.0.as_deref();
        let mut allowed = tenant.and_then(|t| t.allowed.clone());
        let mut max_cost = tenant.and_then(|t| t.max_cost);
        let mut max_ttft_ms = tenant.and_then(|t| t.max_ttft_ms);
        let mut latency_weight = tenant.map_or(0.0, |t| t.latency_weight);
        let header = |name: &str| -> Result<Option<&str>, ApiError> {
            headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map_err(|_| ApiError::bad_request(format!("`{name}` is not text")))
                })
                .transpose()
        };
        if let Some(models) = header(MODELS_HEADER)? {
            let asked: BTreeSet<String> = models
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect();
            if asked.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "`{MODELS_HEADER}` names no model"
                )));
            }
            if let Some(allowed) = &allowed {
                if let Some(outside) = asked.iter().find(|m| !allowed.contains(*m)) {
                    return Err(not_allowed(format!(
                        "`{MODELS_HEADER}` names `{outside}`, which tenant `{}` may not use; its \
                         models are {}",
                        self.name(),
                        list(allowed)
                    )));
                }
            }
            allowed = Some(Arc::new(asked));
        }
        let number = |name: &str, text: &str, valid: fn(f64) -> bool, what: &str| {
            text.trim()
                .parse()
                .ok()
                .filter(|v: &f64| valid(*v))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("`{name}` must be {what}, got {text:?}"))
                })
        };
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if let Some(text) = header(MAX_COST_HEADER)? {
            let asked = number(
                MAX_COST_HEADER,
                text,
                positive,
                "a positive number of dollars",
            )?;
            if let Some(ceiling) = max_cost.filter(|ceiling| asked > *ceiling) {
                return Err(not_allowed(format!(
                    "`{MAX_COST_HEADER}` {asked} is above tenant `{}`'s ceiling of {ceiling}",
                    self.name()
                )));
            }
            max_cost = Some(asked);
        }
        if let Some(text) = header(MAX_TTFT_HEADER)? {
            let what = "a positive number of milliseconds";
            let asked = number(MAX_TTFT_HEADER, text, positive, what)?;
            if let Some(ceiling) = max_ttft_ms.filter(|ceiling| asked > *ceiling) {
                return Err(not_allowed(format!(
                    "`{MAX_TTFT_HEADER}` {asked} is above tenant `{}`'s {ceiling}",
                    self.name()
                )));
            }
            max_ttft_ms = Some(asked);
        }
        if let Some(text) = header(LATENCY_WEIGHT_HEADER)? {
            let unit = |v: f64| (0.0..=1.0).contains(&v);
            let asked = number(LATENCY_WEIGHT_HEADER, text, unit, "a number in [0, 1]")?;
            if asked < latency_weight {
                return Err(not_allowed(format!(
                    "`{LATENCY_WEIGHT_HEADER}` {asked} is below tenant `{}`'s {latency_weight}",
                    self.name()
                )));
            }
            latency_weight = asked;
        }
        Ok(Limits {
            allowed,
            max_cost,
            max_ttft_ms,
            latency_weight,
        })
    }
}

fn list(models: &BTreeSet<String>) -> String {
    models.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// A request that asks for more than its tenant's policy allows.
pub fn not_allowed(message: String) -> ApiError {
    ApiError::forbidden(message).code("policy_violation")
}
