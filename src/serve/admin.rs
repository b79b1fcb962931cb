//! `/admin/*` (behind `--admin-key`): reloading the configuration and the router, and what the
//! router has learned and decided.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::openai::ApiError;
use super::tenants::RequestTenant;
use super::{reload as reload_server, AppState};

/// `POST /admin/reload`, optionally `{"discard_learned": true}`: what SIGHUP does. 200 with what
/// changed, or 422 with why the reload was refused (the running state keeps serving).
pub async fn reload(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let discard_learned = match body.iter().all(u8::is_ascii_whitespace) {
        true => false,
        false => {
            let body: Value = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
            })?;
            match body.get("discard_learned") {
                None => false,
                Some(Value::Bool(discard)) => *discard,
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "`discard_learned` must be true or false",
                    ))
                }
            }
        }
    };
    match reload_server(&state, discard_learned).await {
        Ok(report) => Ok(Json(json!({"reloaded": true, "report": report}))),
        Err(why) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_error",
            format!("reload refused, the running configuration and router keep serving: {why}"),
        )
        .code("reload_refused")),
    }
}

/// `GET /admin/state`: the router served (generation, clusters, models), outcomes learned,
/// the latest snapshot, per model since start: decisions, explored, outcomes and their mean;
/// per model with outcomes since training, how far they stand from its training answers;
/// each model's provider latency over the recent answers; and each tenant's policy and budget.
pub async fn state(State(state): State<Arc<AppState>>) -> Json<Value> {
    let learning = state.engine.learning_state();
    let mut body = json!(learning);
    if let Some(source) = &state.options.reload {
        body["router_path"] = json!(source.router.display().to_string());
        body["config_path"] = json!(source.config.display().to_string());
    }
    let decisions = learning.decisions_since_start.max(1) as f64;
    for (model, counts) in learning.per_model {
        body["per_model"][&model]["share"] = json!(counts.selected as f64 / decisions);
    }
    body["latency"] = json!(state.engine.latency());
    body["tenants"] = tenants(&state);
    Json(body)
}

/// Each tenant's policy and where its budget stands.
fn tenants(state: &AppState) -> Value {
    let config = state.config();
    let tenants: serde_json::Map<String, Value> = config
        .tenants
        .iter()
        .map(|tenant| {
            let request = RequestTenant(Some(tenant.clone()));
            let mut entry = json!({
                "alpha": request.defaults(config.routing).scoring.alpha(),
                "allowed_models": tenant.allowed.as_deref(),
                "max_cost_per_request": tenant.max_cost,
                "max_ttft_ms": tenant.max_ttft_ms,
                "latency_weight": tenant.latency_weight,
            });
            if let (Some(budget), Some(now)) = (tenant.budget, state.budget_now(&request, &config))
            {
                entry["budget"] = json!({
                    "usd": budget.usd,
                    "period_s": budget.period.as_secs_f64(),
                    "on_exhausted": budget.on_exhausted,
                    "period_start_ms": now.period_ms,
                    "spent_usd": now.pace.spent,
                    "elapsed": now.pace.elapsed,
                    "paced_alpha": now.pace.alpha,
                    "exhausted": now.pace.exhausted,
                });
            }
            (tenant.name.clone(), entry)
        })
        .collect();
    Value::Object(tenants)
}
