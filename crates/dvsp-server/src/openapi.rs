//! The OpenAPI 3 description of the REST API, served at /openapi.json. A test checks every
//! operation here against the real router.
use serde_json::{json, Value};

fn error_ref() -> Value {
    json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn image_body(fields: &[&str]) -> Value {
    let props: serde_json::Map<String, Value> = fields
        .iter()
        .map(|f| {
            (
                f.to_string(),
                json!({ "type": "string", "format": "binary" }),
            )
        })
        .collect();
    let b64: serde_json::Map<String, Value> = fields
        .iter()
        .map(|f| {
            (
                format!("{f}_base64"),
                json!({ "type": "string", "format": "byte" }),
            )
        })
        .collect();
    let mut content = json!({
        "multipart/form-data": { "schema": { "type": "object", "properties": props, "required": fields } },
        "application/json": { "schema": { "type": "object", "properties": b64 } },
    });
    if fields == ["image"] {
        for t in ["image/png", "image/jpeg", "image/bmp", "image/webp"] {
            content[t] = json!({ "schema": { "type": "string", "format": "binary" } });
        }
    }
    json!({ "required": true, "content": content })
}

fn op(summary: &str, role: &str, ok: (&str, &str), body: Option<Value>, errors: &[&str]) -> Value {
    let mut responses = json!({ ok.0: { "description": ok.1 } });
    for e in errors {
        responses[*e] = error_ref();
    }
    let mut o = json!({ "summary": summary, "description": format!("Needs an API key with role {role} (or admin). Acts on the key's gallery (a global admin key names one with the x-gallery header; default `default`): another gallery's subjects are 404."), "responses": responses });
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    o
}

fn id_param(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
}

/// The document.
pub fn document() -> Value {
    // Every /v1 operation may be shed (in-flight limit, store pool exhausted): 503.
    let common = ["401", "403", "503"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        common
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect()
    };
    let image_errors = with(&["400", "404", "413", "415", "422", "503"]);
    // Probes also count against the API key's budget (429).
    let probe_errors = with(&["400", "404", "413", "415", "422", "429", "503"]);
    json!({
        "openapi": "3.0.3",
        "info": { "title": "dvsp verification service", "version": env!("CARGO_PKG_VERSION"),
            "description": "Enroll, verify (1:1) and identify (1:N) with DVSP features. Decisions: match when the cosine distance D <= T, T from the model card at the configured FMR. Verify against a subject uses the best (closest) template. similarity and distance are returned as the key's score policy allows: not at all (decision, the default for new keys), rounded to 2 decimals, or full. Every call is recorded in the audit trail under its x-request-id." },
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "apiKey": { "type": "apiKey", "in": "header", "name": "x-api-key" }
            },
            "schemas": { "Error": { "type": "object", "required": ["error", "message"],
                "properties": { "error": { "type": "string" }, "message": { "type": "string" }, "request_id": { "type": "string" } } } }
        },
        "security": [{ "bearer": [] }, { "apiKey": [] }],
        "paths": {
            "/v1/subjects": {
                "post": op("Create a subject ({id?, name?})", "enroll", ("201", "created"),
                    Some(json!({ "required": true, "content": { "application/json": { "schema": { "type": "object",
                        "properties": { "id": { "type": "string" }, "name": { "type": "string" } } } } } })),
                    &with(&["400", "409", "415", "422"])),
                "get": {
                    "parameters": [
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000 } },
                        { "name": "after", "in": "query", "schema": { "type": "string" } },
                        { "name": "prefix", "in": "query", "schema": { "type": "string" }, "description": "only subjects whose id starts with this (exact, case-sensitive)" }
                    ],
                    "summary": "List subjects by id (keyset pagination: pass next_after as after; search with prefix); role read",
                    "responses": { "200": { "description": "a page" }, "401": error_ref(), "403": error_ref(), "422": error_ref() }
                }
            },
            "/v1/subjects/{id}": {
                "parameters": [id_param("id")],
                "get": op("A subject and its templates", "read", ("200", "the subject"), None, &with(&["404"])),
                "delete": op("Delete a subject and its templates", "admin", ("204", "deleted"), None, &with(&["404"]))
            },
            "/v1/subjects/{id}/templates": {
                "parameters": [id_param("id")],
                "post": op("Enroll an image as a template; returns template id and quality r(x)", "enroll", ("201", "enrolled"), Some(image_body(&["image"])), &image_errors)
            },
            "/v1/subjects/{id}/templates/{template_id}": {
                "parameters": [id_param("id"), id_param("template_id")],
                "delete": op("Delete one template", "admin", ("204", "deleted"), None, &with(&["404"]))
            },
            "/v1/subjects/{id}/verify": {
                "parameters": [id_param("id")],
                "post": op("1:1 verify a probe against a subject (best template of the serving model, else of the previous one: migrating true): {match, similarity, distance, threshold, quality, model_id, migrating}", "verify", ("200", "decision"), Some(image_body(&["image"])), &with(&["400", "404", "409", "413", "415", "422", "429", "503"]))
            },
            "/v1/verify": {
                "post": op("Verify two images against each other; nothing is stored", "verify", ("200", "decision"), Some(image_body(&["image_a", "image_b"])), &probe_errors)
            },
            "/v1/identify": {
                "parameters": [{ "name": "top_k", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 100 } }],
                "post": op("1:N identify over the key's gallery: subjects ranked by their best template distance; each candidate returned counts as an attempt on it (spent ones are withheld)", "identify", ("200", "ranked candidates"), Some(image_body(&["image"])), &probe_errors)
            },
            "/v1/model": { "get": op("The served model card, threshold, operating point and the names of its plots", "any", ("200", "model"), None, &common) },
            "/v1/model/plots/{name}": {
                "parameters": [id_param("name")],
                "get": op("One plot of the model directory (a name from plots in /v1/model), image/png", "any", ("200", "the PNG"), None, &with(&["404"]))
            },
            "/v1/whoami": { "get": op("The caller's key: id, gallery, roles, score policy", "any", ("200", "the key"), None, &common) },
            "/v1/status": { "get": op("This replica's readiness, inference queue depth, request counters, index size and uptime; global admin keys only (the counters cover every gallery)", "admin", ("200", "status"), None, &common) },
            "/v1/galleries": {
                "post": op("Create a gallery ({id, name?}); global admin keys only", "admin", ("201", "created"),
                    Some(json!({ "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["id"],
                        "properties": { "id": { "type": "string" }, "name": { "type": "string" } } } } } })),
                    &with(&["400", "409", "415", "422"])),
                "get": op("List the galleries; global admin keys only", "admin", ("200", "galleries"), None, &common)
            },
            "/v1/galleries/{id}/keys": {
                "parameters": [id_param("id")],
                "post": op("Create a key of the gallery ({roles: [verify|identify|read|enroll|admin], scores?: decision|rounded|full}); the key is in the reply, once", "admin", ("201", "created"),
                    Some(json!({ "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["roles"],
                        "properties": { "roles": { "type": "array", "items": { "type": "string" } }, "scores": { "type": "string" } } } } } })),
                    &with(&["400", "404", "415", "422"]))
            },
            "/v1/keys/{id}": {
                "parameters": [id_param("id")],
                "delete": op("Revoke a key (a gallery admin: of its own gallery only)", "admin", ("204", "revoked"), None, &with(&["404"]))
            },
            "/healthz": { "get": { "summary": "Liveness", "security": [], "responses": { "200": { "description": "alive" } } } },
            "/readyz": { "get": { "summary": "Readiness (store reachable)", "security": [], "responses": { "200": { "description": "ready" }, "503": error_ref() } } },
            "/console/": { "get": { "summary": "The operators' console (HTML; the page asks for an API key and calls /v1 with it)", "security": [], "responses": { "200": { "description": "the page" } } } },
            "/openapi.json": { "get": { "summary": "This document", "security": [], "responses": { "200": { "description": "OpenAPI 3" } } } }
        }
    })
}
