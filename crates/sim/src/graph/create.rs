//! Graph `POST /v1.0/users`, as strict as the real service about what the
//! original workflow's "Upload Sample User to Azure AD" could get wrong:
//!
//! - `accountEnabled` (boolean), `displayName`, `mailNickname`,
//!   `userPrincipalName` and `passwordProfile.password` are required;
//! - `userPrincipalName` is `alias@domain` with one of the tenant's verified
//!   domains; `mailNickname` has no `@` or spaces;
//! - a `userPrincipalName` (or `mail`) a live user already has, compared
//!   without case, is `400 Request_BadRequest` "Another object with the same
//!   value for property userPrincipalName already exists." with
//!   `details: [{code: ObjectConflict, target}]`, as Graph answers;
//! - `201 Created` with the user's default property set and a new `id`.
//!
//! Sandbox-only deviations: the refusal of a missing or malformed property
//! uses Graph's "Invalid value specified for property '…'" wording for both
//! cases; password complexity is not checked beyond being non-empty.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::{GraphError, GraphResponse, RequestIds};
use crate::directory::Directory;

/// Graph's UPN local part and mailNickname limit.
const MAX_ALIAS: usize = 64;

/// Creates one user from a request body, or answers Graph's refusal.
/// `domains` are the tenant's verified domains. Reads no clock but `now`.
pub(crate) fn create_user(
    dir: &mut Directory,
    domains: &[&str],
    body: &[u8],
    ids: &RequestIds,
    now: OffsetDateTime,
) -> GraphResponse {
    match validate(dir, domains, body) {
        Ok(user) => match dir.create_at(Value::Object(user), now) {
            Ok(user) => ids.json(StatusCode::CREATED, &created(user)),
            Err(e) => {
                GraphError::new(StatusCode::INTERNAL_SERVER_ERROR, "generalException", e.to_string()).render(ids, now)
            }
        },
        Err(e) => e.render(ids, now),
    }
}

/// The user as stored: the body without its password, with a fresh `id`.
fn validate(dir: &Directory, domains: &[&str], body: &[u8]) -> Result<Map<String, Value>, GraphError> {
    let mut user = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(user)) => user,
        _ => {
            return Err(GraphError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.",
            ));
        }
    };
    if !user.get("accountEnabled").is_some_and(Value::is_boolean) {
        return Err(invalid("accountEnabled"));
    }
    let text = |name: &'static str| -> Result<String, GraphError> {
        match user.get(name).and_then(Value::as_str).map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v.to_owned()),
            _ => Err(invalid(name)),
        }
    };
    text("displayName")?;
    let nickname = text("mailNickname")?;
    if nickname.len() > MAX_ALIAS || nickname.contains(['@', ' ']) {
        return Err(invalid("mailNickname"));
    }
    let upn = text("userPrincipalName")?;
    let (alias, domain) = upn.split_once('@').ok_or_else(|| invalid("userPrincipalName"))?;
    if alias.is_empty() || alias.len() > MAX_ALIAS || domain.contains('@') || alias.contains(' ') {
        return Err(invalid("userPrincipalName"));
    }
    if !domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
        return Err(GraphError {
            details: vec![("InvalidValue", "userPrincipalName")],
            ..GraphError::new(
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.",
            )
        });
    }
    let password = user.get("passwordProfile").and_then(|p| p.get("password")).and_then(Value::as_str);
    if password.is_none_or(str::is_empty) {
        return Err(invalid("passwordProfile"));
    }
    let mail = user.get("mail").and_then(Value::as_str).map(str::to_owned);
    for (property, value) in [("userPrincipalName", Some(upn)), ("mail", mail)] {
        let Some(value) = value else { continue };
        let taken = dir.users().any(|u| {
            ["userPrincipalName", "mail"]
                .iter()
                .any(|p| u.get(*p).and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(&value)))
        });
        if taken {
            return Err(GraphError {
                details: vec![("ObjectConflict", property)],
                ..GraphError::new(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    format!("Another object with the same value for property {property} already exists."),
                )
            });
        }
    }
    user.remove("passwordProfile");
    user.insert("id".into(), Value::String(uuid::Uuid::new_v4().to_string()));
    Ok(user)
}

fn invalid(property: &'static str) -> GraphError {
    GraphError {
        details: vec![("InvalidValue", property)],
        ..GraphError::new(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            format!("Invalid value specified for property '{property}' of resource 'User'."),
        )
    }
}

/// Graph's 201 body: the default property set of the new user.
fn created(user: &Map<String, Value>) -> Value {
    let mut out = json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity" });
    for &p in super::DEFAULT_SELECT {
        let value = user.get(p).cloned().unwrap_or(if p == "businessPhones" { json!([]) } else { Value::Null });
        out[p] = value;
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;

    use super::*;

    fn body(upn: &str) -> Value {
        json!({
            "accountEnabled": true,
            "displayName": "Neil Gilbert",
            "mailNickname": upn.split('@').next().unwrap(),
            "userPrincipalName": upn,
            "mail": upn,
            "passwordProfile": {"forceChangePasswordNextSignIn": true, "password": "xWwvJ]6NMw+bWH-d"},
        })
    }

    fn post(dir: &mut Directory, body: &Value) -> (StatusCode, Value) {
        let ids = RequestIds::from_headers(&HeaderMap::new());
        let bytes = serde_json::to_vec(body).unwrap();
        let r = create_user(dir, &["contoso.example"], &bytes, &ids, OffsetDateTime::UNIX_EPOCH);
        (r.status, serde_json::from_slice(&r.body).unwrap())
    }

    #[test]
    fn a_valid_user_is_created_with_an_id_and_without_its_password() {
        let mut dir = Directory::default();
        let (status, created) = post(&mut dir, &body("neil.gilbert@contoso.example"));
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap();
        assert_eq!(created["userPrincipalName"], "neil.gilbert@contoso.example");
        assert!(created.get("passwordProfile").is_none());
        let stored = dir.get(id).unwrap();
        assert_eq!(stored["displayName"], "Neil Gilbert");
        assert!(!stored.contains_key("passwordProfile"), "the password is not kept");
    }

    #[test]
    fn each_required_property_is_required() {
        for missing in ["accountEnabled", "displayName", "mailNickname", "userPrincipalName", "passwordProfile"] {
            let mut b = body("a@contoso.example");
            b.as_object_mut().unwrap().remove(missing);
            let (status, e) = post(&mut Directory::default(), &b);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{missing}");
            assert_eq!(e["error"]["code"], "Request_BadRequest", "{missing}");
            assert_eq!(e["error"]["details"][0]["target"], missing, "{e}");
        }
        let mut b = body("a@contoso.example");
        b["accountEnabled"] = json!("true");
        assert_eq!(post(&mut Directory::default(), &b).0, StatusCode::BAD_REQUEST, "a string is not a boolean");
        let (status, e) = post(&mut Directory::default(), &json!([1]));
        assert_eq!((status, e["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("BadRequest")));
    }

    #[test]
    fn the_upn_needs_an_alias_and_a_verified_domain() {
        for bad in ["no-at-sign", "@contoso.example", "a@b@contoso.example", "a b@contoso.example"] {
            let (status, e) = post(&mut Directory::default(), &body(bad));
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {e}");
        }
        let (status, e) = post(&mut Directory::default(), &body("neil@example.com"));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(e["error"]["message"].as_str().unwrap().contains("verified domain"), "{e}");
        assert_eq!(post(&mut Directory::default(), &body("neil@CONTOSO.example")).0, StatusCode::CREATED);
    }

    #[test]
    fn a_taken_upn_is_graphs_object_conflict_and_creates_nothing() {
        let mut dir = Directory::default();
        assert_eq!(post(&mut dir, &body("neil@contoso.example")).0, StatusCode::CREATED);
        let (status, e) = post(&mut dir, &body("Neil@contoso.example"));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e["error"]["message"],
            "Another object with the same value for property userPrincipalName already exists."
        );
        assert_eq!(e["error"]["details"][0], json!({"code": "ObjectConflict", "target": "userPrincipalName"}));
        assert!(e["error"]["innerError"]["request-id"].is_string());
        assert_eq!(dir.len(), 1);
    }
}
