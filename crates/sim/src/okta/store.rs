//! The Okta users an import produces, keyed by `externalId`.
//!
//! Okta's rules (reference §4.3): an upsert creates or updates the user and
//! leaves it active; a delete only *deactivates* (Okta never deletes user
//! objects); a delete of an unknown `externalId` is silently ignored.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::bulk::Load;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserStatus {
    Active,
    Deactivated,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OktaUser {
    pub status: UserStatus,
    pub profile: Map<String, Value>,
    pub created: OffsetDateTime,
    pub last_updated: OffsetDateTime,
}

#[derive(Debug, Default)]
pub struct UserStore {
    users: BTreeMap<String, OktaUser>,
}

/// How a user looks through `GET /sim/okta/users`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView<'a> {
    pub external_id: &'a str,
    pub status: UserStatus,
    pub profile: &'a Map<String, Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_updated: OffsetDateTime,
}

impl UserStore {
    pub fn contains(&self, external_id: &str) -> bool {
        self.users.contains_key(external_id)
    }

    pub fn get(&self, external_id: &str) -> Option<&OktaUser> {
        self.users.get(external_id)
    }

    /// Every user with its `externalId`, sorted by it.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &OktaUser)> {
        self.users.iter().map(|(id, u)| (id.as_str(), u))
    }

    /// Applies one accepted bulk request, as the import does at completion.
    pub fn apply(&mut self, load: &Load, at: OffsetDateTime) {
        match load {
            Load::Upsert(profiles) => {
                for p in profiles {
                    self.users
                        .entry(p.external_id.clone())
                        .and_modify(|u| {
                            u.status = UserStatus::Active;
                            u.profile = p.profile.clone();
                            u.last_updated = at;
                        })
                        .or_insert_with(|| OktaUser {
                            status: UserStatus::Active,
                            profile: p.profile.clone(),
                            created: at,
                            last_updated: at,
                        });
                }
            }
            Load::Delete(ids) => {
                for id in ids {
                    if let Some(u) = self.users.get_mut(id) {
                        u.status = UserStatus::Deactivated;
                        u.last_updated = at;
                    }
                }
            }
        }
    }

    /// Every user, sorted by `externalId`.
    pub fn views(&self) -> Vec<UserView<'_>> {
        self.users
            .iter()
            .map(|(id, u)| UserView {
                external_id: id,
                status: u.status,
                profile: &u.profile,
                created: u.created,
                last_updated: u.last_updated,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::okta::bulk::UpsertProfile;
    use serde_json::json;

    fn upsert(id: &str, profile: Value) -> Load {
        let Value::Object(profile) = profile else { panic!("profile must be an object") };
        Load::Upsert(vec![UpsertProfile { external_id: id.into(), profile }])
    }

    #[test]
    fn upsert_replaces_delete_deactivates_upsert_reactivates() {
        let mut store = UserStore::default();
        let t = OffsetDateTime::now_utc();
        store.apply(&upsert("a", json!({"firstName": "A", "title": "x"})), t);
        store.apply(&upsert("a", json!({"firstName": "B"})), t);
        let a = store.get("a").unwrap();
        assert_eq!((a.status, a.profile.get("title")), (UserStatus::Active, None));

        store.apply(&Load::Delete(vec!["a".into(), "ghost".into()]), t);
        assert_eq!(store.get("a").unwrap().status, UserStatus::Deactivated);
        assert!(!store.contains("ghost"));

        store.apply(&upsert("a", json!({"firstName": "C"})), t);
        assert_eq!(store.get("a").unwrap().status, UserStatus::Active);
    }
}
