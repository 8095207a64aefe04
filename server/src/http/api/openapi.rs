//! The OpenAPI 3 document at `/api/v1/openapi.json`, generated from
//! [`super::ROUTES`] (the same table the router mounts) plus the schemas of
//! the bodies. The run config's schema is checked by a test against the
//! fields `RunConfigInput` really has.

use axum::Json;
use serde_json::{Map, Value, json};

use super::{ApiRoute, all_routes};

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

/// `GET /api/v1/openapi.json` (always open: it holds no data).
pub async fn serve() -> Json<Value> {
    Json(document())
}

fn u32_schema() -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": 4294967295_u64, "nullable": true})
}
fn number() -> Value {
    json!({"type": "number", "nullable": true})
}
fn enum_of(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values, "nullable": true})
}

/// The submitted run config (`RunConfigInput`): every key optional, unknown
/// keys refused.
pub fn run_config_schema() -> Value {
    let mut p = Map::new();
    let mut put = |k: &str, v: Value| {
        p.insert(k.to_string(), v);
    };
    put(
        "name",
        json!({"type": "string", "nullable": true, "maxLength": 200}),
    );
    put("kind", enum_of(&["pretrain", "finetune"]));
    put("model", enum_of(&["mae", "wave_mae"]));
    put("preset", enum_of(&maelab_core::config::PRESET_NAMES));
    put(
        "tags",
        json!({"type": "array", "items": {"type": "string"}, "nullable": true}),
    );
    for k in [
        "img_size",
        "patch_size",
        "embed_dim",
        "depth",
        "num_heads",
        "decoder_embed_dim",
        "decoder_depth",
        "decoder_num_heads",
        "num_classes",
        "wave_sr",
        "epochs",
        "batch_size",
        "accum_iter",
        "train_subset",
        "epoch_images",
        "checkpoint_keep_every",
        "test_subset",
        "parent_epoch",
    ] {
        put(k, u32_schema());
    }
    for k in [
        "mlp_ratio",
        "warmup_epochs",
        "blr",
        "lr",
        "min_lr",
        "weight_decay",
        "clip_grad",
        "layer_decay",
        "mask_ratio",
        "hf_loss_weight",
        "drop_path",
        "smoothing",
        "mixup",
        "cutmix",
        "mixup_prob",
        "mixup_switch_prob",
        "reprob",
    ] {
        put(k, number());
    }
    put("wave_in", enum_of(&["encoder", "decoder", "both"]));
    put("precision", enum_of(&["fp32", "bf16"]));
    put(
        "seed",
        json!({"type": "integer", "minimum": 0, "maximum": 18446744073709551615_u64, "nullable": true}),
    );
    put(
        "norm_pix_loss",
        json!({"type": "boolean", "nullable": true}),
    );
    put("dataset", json!({"type": "string", "nullable": true}));
    put(
        "parent_run",
        json!({"type": "string", "format": "uuid", "nullable": true}),
    );
    json!({
        "type": "object",
        "description": "A run config; what is left out comes from the preset and the recipe of the kind.",
        "additionalProperties": false,
        "properties": p,
    })
}

fn schemas() -> Value {
    let object = |d: &str| json!({"type": "object", "description": d});
    json!({
        "RunConfigInput": run_config_schema(),
        "Error": {
            "type": "object",
            "required": ["error", "reason"],
            "properties": {
                "error": {"type": "string"},
                "field": {"type": "string", "nullable": true},
                "reason": {"type": "string"},
            },
        },
        "RunSummary": object("A run list row (see read_model::RunSummary)."),
        "RunDetail": object("A run with its job, worker, queue position and config."),
        "RunPage": {
            "type": "object",
            "properties": {
                "runs": {"type": "array", "items": {"$ref": "#/components/schemas/RunSummary"}},
                "total": {"type": "integer"},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
            },
        },
        "EpochRow": object("One epoch's metrics (the MAE log keys plus maelab's)."),
        "StepRow": object("One sampled training step."),
        "ArtifactInfo": object("An artifact's metadata."),
        "Worker": object("A worker process."),
        "Queue": object("Queued jobs in claim order and running jobs."),
        "StudySpec": study_spec_schema(),
        "StudyPreview": object("The runs a study would queue (nothing is written)."),
        "StudySummary": object("A study with the progress of its chains."),
        "StudyDetail": object("A study: arms, calibration, chains with their runs and values, and the results (mean, 95% bootstrap CI, difference to the baseline, Welch p, probability of improvement, verdicts)."),
        "StudyCancelled": object("Jobs cancelled at once and jobs told to stop."),
        "StudyRetried": object("Runs, finetunes and calibrations put back on the queue."),
        "ExternalRunInput": {
            "type": "object",
            "additionalProperties": false,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "tags": {"type": "array", "maxItems": 20, "items": {"type": "string", "minLength": 1, "maxLength": 50}},
                "config": {"type": "object", "additionalProperties": true, "nullable": true},
                "kind": {"type": "string", "enum": ["pretrain", "finetune"], "nullable": true},
                "model": {"type": "string", "minLength": 1, "maxLength": 100, "nullable": true},
                "client_run_id": {"type": "string", "minLength": 1, "maxLength": 200, "nullable": true},
                "lost_after_seconds": {"type": "integer", "minimum": 10, "maximum": 604800, "nullable": true},
                "parent_run": {"type": "string", "format": "uuid", "nullable": true},
            },
        },
        "MetricBatch": {
            "type": "object",
            "additionalProperties": false,
            "required": ["points"],
            "properties": {"points": {
                "type": "array", "minItems": 1, "maxItems": maelab_core::db::ingest::MAX_POINTS,
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["key", "step", "value"],
                    "properties": {
                        "key": {"type": "string", "minLength": 1, "maxLength": maelab_core::db::ingest::MAX_KEY_CHARS},
                        "step": {"type": "integer", "minimum": 0, "maximum": maelab_core::db::ingest::MAX_STEP},
                        "value": {"type": "number"},
                        "wall_time": {"type": "number", "nullable": true},
                    },
                },
            }},
        },
        "FinishRun": {
            "type": "object",
            "additionalProperties": false,
            "required": ["status"],
            "properties": {
                "status": {"type": "string", "enum": ["succeeded", "failed"]},
                "reason": {"type": "string", "maxLength": 2000, "nullable": true},
            },
        },
    })
}

/// The submitted study (`maelab_core::study::StudySpec`).
pub fn study_spec_schema() -> Value {
    let table = json!({"type": "object", "additionalProperties": true});
    json!({
        "type": "object",
        "description": "A study: a base run config, named arms (overrides of the base) or a grid, seeds and a budget.",
        "additionalProperties": false,
        "required": ["name", "seeds"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 150},
            "description": {"type": "string", "nullable": true},
            "stages": {"type": "string", "enum": ["pretrain_finetune", "pretrain", "finetune"], "nullable": true},
            "baseline": {"type": "string", "nullable": true},
            "seeds": {"oneOf": [
                {"type": "integer", "minimum": 1, "maximum": maelab_core::study::spec::MAX_SEEDS},
                {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
            ]},
            "base": table,
            "finetune": {"type": "object", "additionalProperties": true, "nullable": true},
            "budget": {
                "type": "object",
                "nullable": true,
                "additionalProperties": false,
                "properties": {
                    "epochs": {"type": "integer", "minimum": 1, "nullable": true},
                    "pretrain_epochs": {"type": "integer", "minimum": 1, "nullable": true},
                    "finetune_epochs": {"type": "integer", "minimum": 1, "nullable": true},
                    "pretrain_seconds": {"type": "number", "nullable": true},
                    "finetune_seconds": {"type": "number", "nullable": true},
                },
            },
            "arms": {"type": "object", "additionalProperties": table},
            "grid": {"type": "object", "additionalProperties": {"type": "array"}},
        },
    })
}

/// Names of the `{param}` segments of an axum path.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

fn operation(route: &ApiRoute) -> Value {
    let mut params: Vec<Value> = path_params(route.path)
        .into_iter()
        .map(|name| {
            let schema = if name == "run_id" || name == "study_id" {
                json!({"type": "string", "format": "uuid"})
            } else {
                json!({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"})
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    params.extend(route.query.iter().map(|q| {
        json!({"name": q.name, "in": "query", "required": false,
               "description": q.description, "schema": (q.schema)()})
    }));
    let (status, media, schema) = route.ok;
    let mut responses = Map::new();
    responses.insert(
        status.to_string(),
        json!({"description": "success", "content": {media: {"schema": schema()}}}),
    );
    responses.insert("400".into(), error_response("malformed request"));
    responses.insert(
        "401".into(),
        error_response("missing, unknown, revoked or expired token"),
    );
    for code in route.errors {
        responses.insert(code.to_string(), error_response("see the reason"));
    }
    if route.write {
        responses.insert(
            "403".into(),
            error_response(
                "the token's scope is too weak (it needs `submit`; a `submit` token changes \
                 only what it created), or a cross-site browser request",
            ),
        );
    }
    let mut op = json!({
        "operationId": route.operation_id,
        "summary": route.summary,
        "parameters": params,
        "responses": responses,
    });
    if let Some(body) = route.body {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": body()}},
        });
    }
    op["security"] = if route.write {
        json!([{"bearer": []}])
    } else {
        json!([{}, {"bearer": []}])
    };
    op
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in all_routes() {
        let item = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        item[route.verb.as_str()] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "maelab",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "MAE / Wave-MAE experiment service. Writes need `Authorization: Bearer <token>` with scope `submit` (creates runs and studies, changes only its own), `write` or `admin` (change anything); errors are {\"error\", \"field\", \"reason\"}.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_config_schema_lists_exactly_the_fields_of_run_config_input() {
        let input = serde_json::to_value(maelab_core::config::RunConfigInput::default()).unwrap();
        let mut fields: Vec<&String> = input.as_object().unwrap().keys().collect();
        let schema = run_config_schema();
        let mut documented: Vec<&String> =
            schema["properties"].as_object().unwrap().keys().collect();
        fields.sort();
        documented.sort();
        assert_eq!(fields, documented);
    }

    #[test]
    fn every_route_is_documented_with_its_path_parameters() {
        let doc = document();
        for route in all_routes() {
            let op = &doc["paths"][route.path][route.verb.as_str()];
            assert_eq!(op["operationId"], route.operation_id, "{}", route.path);
            let documented: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(documented, path_params(route.path), "{}", route.path);
        }
    }
}
