//! The published JSON Schema of `SyncRequest` says exactly what the workers
//! accept: for every sample, the schema and the real parser agree.

use serde_json::{Value, json};
use xaas_core::SyncRequest;

fn schema() -> jsonschema::Validator {
    let text = include_str!("../schemas/sync-request.schema.json");
    let schema: Value = serde_json::from_str(text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

#[test]
fn the_schema_and_the_parser_agree() {
    let validator = schema();
    let samples = [
        (json!({"sync": "demo"}), true),
        (json!({"sync": "demo", "mode": "deactivate", "dry_run": true, "run_id": "r-1"}), true),
        (json!({"v": 1, "sync": "entra_main", "mode": "delta", "run_id": null}), true),
        (json!({"sync": "demo", "mode": "deactivate", "users": ["00u1", "a@b.example"]}), true),
        (json!({"sync": "demo", "users": [""]}), false),
        (json!({"sync": "demo", "mode": "all"}), false),
        (json!({"sync": "Demo"}), false),
        (json!({"sync": "demo", "dryrun": true}), false),
        (json!({"mode": "full"}), false),
        (json!({"sync": "demo", "v": 2}), false),
        (json!({"sync": "demo", "run_id": "has space"}), false),
    ];
    for (sample, valid) in samples {
        assert_eq!(validator.is_valid(&sample), valid, "schema on {sample}");
        let parsed = serde_json::from_value::<SyncRequest>(sample.clone());
        // The version is checked by the consumer, not by serde.
        let parser_ok = parsed.is_ok_and(|r| r.v == xaas_core::MESSAGE_VERSION);
        assert_eq!(parser_ok, valid, "parser on {sample}");
    }
}

#[test]
fn what_xaas_enqueue_publishes_validates() {
    // Every field the struct serializes must be in the schema.
    let req: SyncRequest = serde_json::from_value(json!({"sync": "demo", "run_id": "r-42"})).unwrap();
    let value = serde_json::to_value(&req).unwrap();
    let errors: Vec<String> = schema().iter_errors(&value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn xaas_schema_prints_the_published_file() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xaas")).arg("schema").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), include_str!("../schemas/sync-request.schema.json"));
}
