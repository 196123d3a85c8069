//! Okta's import session (`IdentitySourceSession`), parsed from the wire.

use serde::Deserialize;
use time::OffsetDateTime;
use xaas_core::SessionStatus;

use crate::OktaError;

/// One import session of an identity source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub identity_source_id: String,
    pub status: SessionStatus,
    /// Always `INCREMENTAL` today.
    pub import_type: Option<String>,
    /// RFC 3339, as Okta sent it.
    pub created: Option<String>,
    pub last_updated: Option<String>,
    /// Okta's clock when it sent this (the answer's `Date`), so that
    /// durations Okta enforces, such as the cooldown after a trigger, can be
    /// measured on Okta's clock instead of ours.
    pub okta_date: Option<OffsetDateTime>,
}

/// The wire shape. Every field is `readOnly` and none is `required` in the
/// spec, and old examples omit `created`/`lastUpdated`; only `id` and
/// `status` are indispensable.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    id: String,
    identity_source_id: Option<String>,
    status: SessionStatus,
    import_type: Option<String>,
    created: Option<String>,
    last_updated: Option<String>,
}

impl Wire {
    fn into_session(self, identity_source_id: &str, okta_date: Option<OffsetDateTime>) -> Session {
        Session {
            id: self.id,
            identity_source_id: self.identity_source_id.unwrap_or_else(|| identity_source_id.to_string()),
            status: self.status,
            import_type: self.import_type,
            created: self.created,
            last_updated: self.last_updated,
            okta_date,
        }
    }
}

/// start-import: the schema says one session, the spec's own example
/// (`TriggerSessionResponse`) is an array of one (reference §7.6).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Wire),
    Many(Vec<Wire>),
}

fn malformed(what: &str, err: serde_json::Error, body: &[u8]) -> OktaError {
    let start = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    OktaError::Malformed(format!("{what}: {err} (body starts {start:?})"))
}

/// A single session (create, get), sent at `okta_date`.
pub(crate) fn parse_one(
    body: &[u8],
    identity_source_id: &str,
    okta_date: Option<OffsetDateTime>,
) -> Result<Session, OktaError> {
    let wire: Wire = serde_json::from_slice(body).map_err(|e| malformed("session", e, body))?;
    Ok(wire.into_session(identity_source_id, okta_date))
}

/// The list endpoint's array.
pub(crate) fn parse_list(
    body: &[u8],
    identity_source_id: &str,
    okta_date: Option<OffsetDateTime>,
) -> Result<Vec<Session>, OktaError> {
    let wires: Vec<Wire> = serde_json::from_slice(body).map_err(|e| malformed("session list", e, body))?;
    Ok(wires.into_iter().map(|w| w.into_session(identity_source_id, okta_date)).collect())
}

/// start-import's answer: an object, or an array holding the session.
pub(crate) fn parse_triggered(
    body: &[u8],
    identity_source_id: &str,
    session_id: &str,
    okta_date: Option<OffsetDateTime>,
) -> Result<Session, OktaError> {
    let parsed: OneOrMany = serde_json::from_slice(body).map_err(|e| malformed("start-import answer", e, body))?;
    let wire = match parsed {
        OneOrMany::One(w) => w,
        OneOrMany::Many(ws) => {
            let count = ws.len();
            let found = if count == 1 { ws.into_iter().next() } else { ws.into_iter().find(|w| w.id == session_id) };
            found.ok_or_else(|| {
                OktaError::Malformed(format!("start-import answered {count} sessions, none of them {session_id:?}"))
            })?
        }
    };
    Ok(wire.into_session(identity_source_id, okta_date))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_SESSION: &str = r#"{"id":"aps1qqonvr2SZv6o70h8","identitySourceId":"0oa3l6l6WK6h0R0QW0g4",
        "status":"IN_PROGRESS","importType":"INCREMENTAL","created":"2022-04-04T15:56:05.000Z","lastUpdated":"2022-05-05T18:15:44.000Z"}"#;

    #[test]
    fn the_spec_example_parses() {
        let s = parse_one(SPEC_SESSION.as_bytes(), "other", None).unwrap();
        assert_eq!(s.id, "aps1qqonvr2SZv6o70h8");
        assert_eq!(s.identity_source_id, "0oa3l6l6WK6h0R0QW0g4");
        assert_eq!(s.status, SessionStatus::InProgress);
        assert_eq!(s.import_type.as_deref(), Some("INCREMENTAL"));
        assert_eq!(s.created.as_deref(), Some("2022-04-04T15:56:05.000Z"));
        assert_eq!(s.last_updated.as_deref(), Some("2022-05-05T18:15:44.000Z"));
    }

    #[test]
    fn legacy_sessions_without_timestamps_or_source_parse() {
        let s = parse_one(br#"{"id":"aps1","status":"CREATED"}"#, "0oa9", None).unwrap();
        assert_eq!(s.identity_source_id, "0oa9");
        assert_eq!(s.status, SessionStatus::Created);
        assert_eq!(s.created, None);
    }

    #[test]
    fn start_import_accepts_object_array_of_one_and_picks_by_id() {
        let trig = |body: &str| parse_triggered(body.as_bytes(), "0oa9", "aps2", None);
        assert_eq!(trig(r#"{"id":"aps2","status":"TRIGGERED"}"#).unwrap().status, SessionStatus::Triggered);
        assert_eq!(trig(r#"[{"id":"aps2","status":"TRIGGERED"}]"#).unwrap().id, "aps2");
        let two = r#"[{"id":"aps1","status":"COMPLETED"},{"id":"aps2","status":"TRIGGERED"}]"#;
        assert_eq!(trig(two).unwrap().id, "aps2");
        assert!(matches!(trig("[]"), Err(OktaError::Malformed(_))));
        let neither = r#"[{"id":"a","status":"COMPLETED"},{"id":"b","status":"TRIGGERED"}]"#;
        assert!(matches!(trig(neither), Err(OktaError::Malformed(_))));
    }

    #[test]
    fn an_unknown_status_is_malformed_not_guessed() {
        let err = parse_one(br#"{"id":"aps1","status":"PAUSED"}"#, "0oa9", None).unwrap_err();
        assert!(matches!(err, OktaError::Malformed(ref m) if m.contains("PAUSED")), "{err}");
    }

    #[test]
    fn lists_parse() {
        let body = format!("[{SPEC_SESSION},{{\"id\":\"aps2\",\"status\":\"EXPIRED\"}}]");
        let list = parse_list(body.as_bytes(), "0oa9", None).unwrap();
        assert_eq!(
            list.iter().map(|s| s.status).collect::<Vec<_>>(),
            vec![SessionStatus::InProgress, SessionStatus::Expired]
        );
    }
}
