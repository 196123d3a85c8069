//! The bodies of `bulk-upsert` and `bulk-delete`, byte for byte.

use serde::Serialize;
use xaas_core::{OktaProfile, Op};

/// `BulkUpsertRequestBody` / `BulkDeleteRequestBody`: only `USERS` exists.
#[derive(Serialize)]
struct BulkBody<'a, P> {
    #[serde(rename = "entityType")]
    entity_type: &'static str,
    profiles: &'a [P],
}

/// `IdentitySourceUserProfileForDelete`: a delete carries the id alone, even
/// when the caller's entry still has its profile.
#[derive(Serialize)]
struct DeleteEntry<'a> {
    #[serde(rename = "externalId")]
    external_id: &'a str,
}

/// Exactly the bytes [`OktaClient`](crate::OktaClient) sends for `op`:
/// `{"entityType":"USERS","profiles":[...]}`. The uploader measures its
/// length against Okta's 200 KB per-request limit, so this is the one place
/// the body is encoded.
pub fn bulk_body(op: Op, profiles: &[OktaProfile]) -> Vec<u8> {
    let encoded = match op {
        Op::Upsert => serde_json::to_vec(&BulkBody { entity_type: "USERS", profiles }),
        Op::Delete => {
            let ids: Vec<DeleteEntry<'_>> =
                profiles.iter().map(|p| DeleteEntry { external_id: p.external_id.as_str() }).collect();
            serde_json::to_vec(&BulkBody { entity_type: "USERS", profiles: &ids })
        }
    };
    // serde_json fails only on non-string map keys or a failing custom
    // `Serialize`; these types are strings and string maps all the way down.
    encoded.expect("a bulk body is strings and string maps, which always encode")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use xaas_core::ExternalId;

    use super::*;

    fn profile(id: &str, email: &str) -> OktaProfile {
        OktaProfile {
            external_id: ExternalId::parse(id).unwrap(),
            profile: Some(BTreeMap::from([
                ("email".to_string(), email.to_string()),
                ("userName".to_string(), email.to_string()),
            ])),
        }
    }

    #[test]
    fn upsert_body_is_the_spec_shape() {
        let body = bulk_body(Op::Upsert, &[profile("u1", "a@example.com")]);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"entityType":"USERS","profiles":[{"externalId":"u1","profile":{"email":"a@example.com","userName":"a@example.com"}}]}"#
        );
    }

    #[test]
    fn delete_body_drops_profiles() {
        let body = bulk_body(Op::Delete, &[profile("u1", "a@example.com"), profile("u2", "b@example.com")]);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"entityType":"USERS","profiles":[{"externalId":"u1"},{"externalId":"u2"}]}"#
        );
    }

    #[test]
    fn non_ascii_is_sent_as_utf8_not_escaped() {
        // The 200 KB limit is on bytes; escaping would inflate the count.
        let body = bulk_body(Op::Upsert, &[profile("ü", "zoë@example.com")]);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains("zoë@example.com"), "{text}");
    }
}
