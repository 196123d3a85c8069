//! Parsing bulk-upsert and bulk-delete bodies the way Okta judges them.
//!
//! Okta refuses a bulk request *whole*: one bad profile among 200 costs all
//! 200 a 400, with one `errorCause` per bad profile. That is what makes the
//! product isolate bad records before sending, so the sandbox must refuse the
//! same way rather than quietly skip the bad ones.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::error::OktaError;
use super::schema::{CauseStyle, ProfileSchema};

/// "up to 200 entities in a single bulk-load request" (reference §2).
pub const MAX_PROFILES: usize = 200;
/// "up to 200 KB of data" per bulk-load request, counted on the request body.
pub const MAX_BODY_BYTES: usize = 200 * 1024;

/// The limits the sandbox enforces: Okta's, unless a simulation lowers
/// them to exercise the same rules with a handful of users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OktaLimits {
    pub profiles_per_request: usize,
    pub bytes_per_request: usize,
    pub requests_per_session: usize,
}

impl OktaLimits {
    pub const OKTA: OktaLimits = OktaLimits {
        profiles_per_request: MAX_PROFILES,
        bytes_per_request: MAX_BODY_BYTES,
        requests_per_session: super::session::MAX_REQUESTS_PER_SESSION,
    };
}

impl Default for OktaLimits {
    fn default() -> Self {
        Self::OKTA
    }
}
/// `externalId` is `maxLength: 512` in the spec; an empty one identifies nobody.
pub const MAX_EXTERNAL_ID: usize = 512;

/// Which bulk endpoint a body was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkKind {
    Upsert,
    Delete,
}

impl BulkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkKind::Upsert => "upsert",
            BulkKind::Delete => "delete",
        }
    }
}

/// One user to create or update, exactly as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsertProfile {
    pub external_id: String,
    pub profile: Map<String, Value>,
}

/// An accepted bulk request, in the form the import applies it.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    Upsert(Vec<UpsertProfile>),
    Delete(Vec<String>),
}

impl Load {
    pub fn kind(&self) -> BulkKind {
        match self {
            Load::Upsert(_) => BulkKind::Upsert,
            Load::Delete(_) => BulkKind::Delete,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Load::Upsert(p) => p.len(),
            Load::Delete(ids) => ids.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parses a bulk body, or says every reason Okta would refuse it.
pub fn parse(kind: BulkKind, body: &[u8]) -> Result<Load, OktaError> {
    parse_with(kind, body, None)
}

/// [`parse`], also refusing upserted attributes that `schema` (when
/// declared) does not define.
pub fn parse_with(kind: BulkKind, body: &[u8], schema: Option<&ProfileSchema>) -> Result<Load, OktaError> {
    parse_within(kind, body, schema, &OktaLimits::OKTA)
}

/// [`parse_with`] under `limits`.
pub fn parse_within(
    kind: BulkKind,
    body: &[u8],
    schema: Option<&ProfileSchema>,
    limits: &OktaLimits,
) -> Result<Load, OktaError> {
    if body.len() > limits.bytes_per_request {
        let kb = if limits.bytes_per_request == MAX_BODY_BYTES { " (200 KB)" } else { "" };
        return Err(OktaError::validation(
            "request body",
            vec![format!(
                "The request body is {} bytes; a bulk request may carry at most {} bytes{kb}.",
                body.len(),
                limits.bytes_per_request
            )],
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(OktaError::malformed("The request body is empty."));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| OktaError::malformed(format!("The request body is not valid JSON: {e}")))?;
    let Value::Object(top) = value else {
        return Err(OktaError::malformed("The request body must be a JSON object."));
    };

    match top.get("entityType") {
        Some(Value::String(s)) if s == "USERS" => {}
        None | Some(Value::Null) => {
            return Err(OktaError::validation(
                "entityType",
                vec!["entityType: must not be null; the only supported value is USERS".into()],
            ));
        }
        Some(other) => {
            return Err(OktaError::malformed(format!(
                "entityType: {other} is not a valid value; the only supported value is USERS"
            )));
        }
    }

    let items = match top.get("profiles") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(OktaError::validation("profiles", vec!["profiles: must not be empty".into()]));
        }
        Some(_) => return Err(OktaError::malformed("profiles: must be an array")),
    };
    if items.len() > limits.profiles_per_request {
        return Err(OktaError::validation(
            "profiles",
            vec![format!(
                "profiles: a bulk request may carry at most {} profiles; this one has {}",
                limits.profiles_per_request,
                items.len()
            )],
        ));
    }

    let mut causes = Vec::new();
    let load = match kind {
        BulkKind::Upsert => {
            let mut out = Vec::with_capacity(items.len());
            // perAttribute causes: each unknown attribute once, no profile named.
            let mut undefined_anywhere = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let undefined = schema.map(|s| undefined_attributes(item, s)).unwrap_or_default();
                let (profile, mut problems) = match upsert_item(item) {
                    Ok(p) => (Some(p), Vec::new()),
                    Err(problems) => (None, problems),
                };
                match schema.map(|s| s.causes) {
                    Some(CauseStyle::PerProfile) => {
                        problems.extend(undefined.iter().map(|a| ProfileSchema::undefined(a)))
                    }
                    Some(CauseStyle::PerAttribute) => undefined_anywhere.extend(undefined.iter().cloned()),
                    None => {}
                }
                if !problems.is_empty() {
                    causes.push(describe(i, item, &problems));
                } else if let Some(p) = profile.filter(|_| undefined.is_empty()) {
                    out.push(p);
                }
            }
            causes.extend(undefined_anywhere.iter().map(|a| ProfileSchema::undefined(a)));
            Load::Upsert(out)
        }
        BulkKind::Delete => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match external_id(item) {
                    Ok(id) => out.push(id),
                    Err(problem) => causes.push(describe(i, item, &[problem])),
                }
            }
            Load::Delete(out)
        }
    };
    if causes.is_empty() { Ok(load) } else { Err(OktaError::validation("profiles", causes)) }
}

/// One cause per bad profile, naming it by position and `externalId`.
fn describe(index: usize, item: &Value, problems: &[String]) -> String {
    let who = match item.get("externalId") {
        Some(Value::String(id)) => format!("profiles[{index}] (externalId {id:?})"),
        _ => format!("profiles[{index}]"),
    };
    format!("{who}: {}", problems.join("; "))
}

fn external_id(item: &Value) -> Result<String, String> {
    let Value::Object(_) = item else {
        return Err("must be an object with an externalId".into());
    };
    match item.get("externalId") {
        Some(Value::String(id)) => {
            let n = id.chars().count();
            if n == 0 {
                Err("externalId: must not be empty".into())
            } else if n > MAX_EXTERNAL_ID {
                Err(format!("externalId: must be at most {MAX_EXTERNAL_ID} characters, got {n}"))
            } else {
                Ok(id.clone())
            }
        }
        None | Some(Value::Null) => Err("externalId: must not be null".into()),
        Some(_) => Err("externalId: must be a string".into()),
    }
}

fn upsert_item(item: &Value) -> Result<UpsertProfile, Vec<String>> {
    let mut problems = Vec::new();
    let id = external_id(item).map_err(|p| problems.push(p)).ok();
    let profile = match item.get("profile") {
        Some(Value::Object(profile)) => {
            for (name, value) in profile {
                if let Err(p) = check_attribute(name, value) {
                    problems.push(p);
                }
            }
            Some(profile.clone())
        }
        None | Some(Value::Null) => {
            problems.push("profile: must not be null".into());
            None
        }
        Some(_) => {
            problems.push("profile: must be an object".into());
            None
        }
    };
    match (id, profile) {
        (Some(external_id), Some(profile)) if problems.is_empty() => Ok(UpsertProfile { external_id, profile }),
        _ => Err(problems),
    }
}

/// The profile's attributes that `schema` does not define, by name.
fn undefined_attributes(item: &Value, schema: &ProfileSchema) -> Vec<String> {
    match item.get("profile") {
        Some(Value::Object(profile)) => profile.keys().filter(|name| !schema.defines(name)).cloned().collect(),
        _ => Vec::new(),
    }
}

/// The spec's constraints on the standard attributes
/// (`IdentitySourceUserProfileForUpsert`); anything else is a custom
/// attribute, which must still be a string.
struct Rule {
    min: usize,
    max: usize,
    nullable: bool,
    email: bool,
}

fn rule(name: &str) -> Option<Rule> {
    let r = |min, max, nullable, email| Some(Rule { min, max, nullable, email });
    match name {
        "userName" => r(0, 100, false, false),
        "firstName" | "lastName" => r(1, 50, true, false),
        "email" | "secondEmail" => r(5, 100, false, true),
        "mobilePhone" => r(0, 100, true, false),
        "homeAddress" => r(0, 4096, true, false),
        _ => None,
    }
}

fn check_attribute(name: &str, value: &Value) -> Result<(), String> {
    let rule = rule(name);
    let s = match value {
        Value::String(s) => s,
        Value::Null if rule.as_ref().is_some_and(|r| r.nullable) => return Ok(()),
        Value::Null => return Err(format!("{name}: must not be null")),
        Value::Array(_) => return Err(format!("{name}: must be a string; arrays are not supported")),
        Value::Bool(_) | Value::Number(_) | Value::Object(_) => {
            return Err(format!("{name}: must be a string; profile attributes can only be of the string type"));
        }
    };
    let Some(rule) = rule else { return Ok(()) };
    let n = s.chars().count();
    if n < rule.min || n > rule.max {
        return Err(format!("{name}: size must be between {} and {}, got {n}", rule.min, rule.max));
    }
    if rule.email && !is_email(s) {
        return Err(format!("{name}: {s:?} is not a valid email address"));
    }
    Ok(())
}

/// A deliberately plain check: one `@`, a non-empty local part, a dotted
/// domain of letters, digits and hyphens, no whitespace.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    if local.is_empty() || domain.contains('@') || s.chars().any(char::is_whitespace) {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upsert(profiles: Value) -> Result<Load, OktaError> {
        parse(BulkKind::Upsert, json!({"entityType": "USERS", "profiles": profiles}).to_string().as_bytes())
    }

    #[test]
    fn accepts_strings_and_nulls_where_the_spec_allows_them() {
        let load = upsert(json!([{"externalId": "a", "profile": {
            "userName": "a@example.com", "email": "a@example.com", "firstName": null,
            "mobilePhone": null, "department": "Okta Workflows"}}]))
        .unwrap();
        assert_eq!(load.len(), 1);
    }

    #[test]
    fn refuses_the_whole_request_with_one_cause_per_bad_profile() {
        let err = upsert(json!([
            {"externalId": "good", "profile": {"email": "g@example.com"}},
            {"externalId": "num", "profile": {"department": 7}},
            {"externalId": "long", "profile": {"firstName": "x".repeat(51), "email": "nope"}},
            {"externalId": "nulled", "profile": {"department": null}},
        ]))
        .unwrap_err();
        assert_eq!(err.code, "E0000001");
        assert_eq!(err.causes.len(), 3, "{:?}", err.causes);
        assert!(err.causes[0].contains("\"num\"") && err.causes[0].contains("department"));
        assert!(err.causes[1].contains("firstName") && err.causes[1].contains("email"));
        assert!(err.causes[2].contains("\"nulled\""));
    }

    #[test]
    fn a_declared_schema_refuses_undefined_attributes_naming_profiles_or_not() {
        let body = json!({"entityType": "USERS", "profiles": [
            {"externalId": "ok", "profile": {"email": "a@example.com"}},
            {"externalId": "drift-1", "profile": {"email": "b@example.com", "costCenter": "7"}},
            {"externalId": "drift-2", "profile": {"email": "c@example.com", "costCenter": "8"}},
        ]})
        .to_string();
        assert!(parse(BulkKind::Upsert, body.as_bytes()).is_ok(), "no schema declared: anything goes");

        let attributes = ["userName", "email"].map(String::from).into();
        let per_profile = ProfileSchema { attributes, causes: CauseStyle::PerProfile };
        let err = parse_with(BulkKind::Upsert, body.as_bytes(), Some(&per_profile)).unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (400, "E0000001"));
        assert_eq!(err.causes.len(), 2, "{:?}", err.causes);
        assert!(err.causes[0].contains("\"drift-1\"") && err.causes[0].contains("'costCenter'"), "{:?}", err.causes);
        assert!(err.causes[1].contains("\"drift-2\""));

        let per_attribute = ProfileSchema { causes: CauseStyle::PerAttribute, ..per_profile };
        let err = parse_with(BulkKind::Upsert, body.as_bytes(), Some(&per_attribute)).unwrap_err();
        assert_eq!(err.causes, vec![ProfileSchema::undefined("costCenter")], "one cause, naming no profile");
        assert!(!err.causes[0].contains("drift"));

        let deletes = json!({"entityType": "USERS", "profiles": [{"externalId": "drift-1"}]}).to_string();
        assert!(
            parse_with(BulkKind::Delete, deletes.as_bytes(), Some(&per_attribute)).is_ok(),
            "deletes carry no profile"
        );
    }

    #[test]
    fn counts_profiles_and_bytes() {
        let many: Vec<Value> = (0..201).map(|i| json!({"externalId": i.to_string()})).collect();
        let err = parse(BulkKind::Delete, json!({"entityType": "USERS", "profiles": many}).to_string().as_bytes())
            .unwrap_err();
        assert!(err.causes[0].contains("201"));

        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(parse(BulkKind::Delete, &big).unwrap_err().causes[0].contains("204801"));
    }

    #[test]
    fn entity_type_and_profiles_must_be_there() {
        let missing = parse(BulkKind::Delete, br#"{"profiles":[{"externalId":"a"}]}"#).unwrap_err();
        assert_eq!(missing.code, "E0000001");
        let groups =
            parse(BulkKind::Delete, br#"{"entityType":"GROUPS","profiles":[{"externalId":"a"}]}"#).unwrap_err();
        assert_eq!(groups.code, "E0000003");
        let empty = parse(BulkKind::Delete, br#"{"entityType":"USERS","profiles":[]}"#).unwrap_err();
        assert_eq!(empty.code, "E0000001");
        assert_eq!(parse(BulkKind::Delete, b"").unwrap_err().code, "E0000003");
    }

    #[test]
    fn emails() {
        for good in ["a@b.co", "first.last+tag@sub.example.com"] {
            assert!(is_email(good), "{good}");
        }
        for bad in ["nope", "a@b", "@b.co", "a b@c.de", "a@@b.co", "a@-b.co", "a@b..co"] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
