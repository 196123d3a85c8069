//! The source directory: Entra's users as Graph JSON objects, plus the change
//! log that lets `/users/delta` answer "what changed since then".
//!
//! Users are kept in creation order (`seq`), which is the stable order every
//! Graph page is cut from: a paging position is just "after seq N", so users
//! created or deleted while a client pages never shift the pages it has not
//! read yet. Every create, update, disable and delete bumps `version` and
//! stamps the entry with it; a delta token remembers the version it was issued
//! at. Deleted users stay behind as tombstones so delta can report them as
//! `@removed`.
//!
//! The directory never reads a clock: the two timestamps it stamps
//! (`createdDateTime`, `deletedDateTime`) come from the `*_at` methods'
//! `now`; the plain methods pass the wall clock.
//!
//! Users are stored as raw JSON on purpose: the seeder can plant malformed
//! records (a number where Graph has a string, duplicate ids) that the product
//! must survive, which a typed struct could not even hold.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A Graph user object (`microsoft.graph.user`), as JSON.
pub type User = Map<String, Value>;

/// How a user left the directory. Graph reports it in `@removed.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Permanently deleted (`"deleted"`). What the admin API's plain `DELETE` does.
    Deleted,
    /// Soft-deleted, restorable from deleted items (`"changed"`).
    SoftDeleted,
}

impl Removal {
    /// The `@removed.reason` Graph sends for this removal.
    pub fn reason(self) -> &'static str {
        match self {
            Removal::Deleted => "deleted",
            Removal::SoftDeleted => "changed",
        }
    }
}

/// One user and its place in the change log.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Creation order; the stable paging key.
    pub seq: u64,
    /// Directory version at which the user was created.
    pub created: u64,
    /// Directory version of the user's last change (creation included).
    pub changed: u64,
    /// Set once the user is deleted; the entry is then a tombstone.
    pub removed: Option<Removal>,
    pub user: User,
}

impl Entry {
    pub fn id(&self) -> &str {
        self.user.get("id").and_then(Value::as_str).unwrap_or_default()
    }

    pub fn is_live(&self) -> bool {
        self.removed.is_none()
    }

    /// Whether a delta round that started from `since` must report this entry.
    /// A user created and deleted after `since` was never seen by that client,
    /// so it is not reported at all.
    pub fn changed_since(&self, since: u64) -> bool {
        self.changed > since && !(self.removed.is_some() && self.created > since)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DirectoryError {
    #[error("user {0:?} does not exist (or was deleted); list the users with GET /sim/users")]
    NotFound(String),
    #[error("user {0:?} already exists; PATCH it instead, or pick another id")]
    Exists(String),
    #[error("a user must be a JSON object with a string \"id\"")]
    MissingId,
    #[error("the id of user {0:?} cannot be changed; delete it and create a new one")]
    IdChange(String),
    #[error("a user must be a JSON object, got {0}")]
    NotAnObject(&'static str),
}

/// The source users. See the module documentation.
#[derive(Debug, Default)]
pub struct Directory {
    entries: BTreeMap<u64, Entry>,
    /// Live users by id. A planted duplicate id is not indexed: the admin API
    /// reaches the first user that had the id.
    by_id: HashMap<String, u64>,
    next_seq: u64,
    version: u64,
    /// Delta tokens carry the generation they were issued in; tokens of an
    /// older generation are dead (reseeded directory or expired on purpose).
    generation: u64,
}

impl Directory {
    /// Empties the directory. Every delta token issued before becomes invalid,
    /// because the history it refers to is gone.
    pub fn reset(&mut self) {
        let generation = self.generation + 1;
        *self = Self { generation, ..Self::default() };
    }

    /// Invalidates every delta token issued so far, keeping the users.
    pub fn expire_delta_tokens(&mut self) {
        self.generation += 1;
    }

    /// Bumped by every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of live users.
    pub fn len(&self) -> usize {
        self.entries.values().filter(|e| e.is_live()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All entries, tombstones included, in creation order starting after `seq`
    /// (`None` = from the start).
    pub fn entries_after(&self, seq: Option<u64>) -> impl Iterator<Item = &Entry> {
        let start = seq.map_or(0, |s| s.saturating_add(1));
        self.entries.range(start..).map(|(_, e)| e)
    }

    /// Live users in creation order.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.entries.values().filter(|e| e.is_live()).map(|e| &e.user)
    }

    pub fn get(&self, id: &str) -> Option<&User> {
        self.by_id.get(id).and_then(|seq| self.entries.get(seq)).map(|e| &e.user)
    }

    /// Adds a user as given, even when its id is already taken: seeding plants
    /// duplicates on purpose (see `seed`). Use [`Directory::create`] for the
    /// admin API, which refuses them. `createdDateTime` is stamped when absent.
    pub fn insert(&mut self, user: Value) -> Result<&User, DirectoryError> {
        self.insert_at(user, OffsetDateTime::now_utc())
    }

    /// [`Directory::insert`], stamping `createdDateTime` with `now`.
    pub fn insert_at(&mut self, user: Value, now: OffsetDateTime) -> Result<&User, DirectoryError> {
        let mut user = into_object(user)?;
        let id = user.get("id").and_then(Value::as_str).ok_or(DirectoryError::MissingId)?.to_owned();
        user.entry("createdDateTime").or_insert_with(|| Value::String(rfc3339(now)));
        self.version += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id.entry(id).or_insert(seq);
        let entry = Entry { seq, created: self.version, changed: self.version, removed: None, user };
        Ok(&self.entries.entry(seq).or_insert(entry).user)
    }

    /// Adds a user whose id is not taken.
    pub fn create(&mut self, user: Value) -> Result<&User, DirectoryError> {
        self.create_at(user, OffsetDateTime::now_utc())
    }

    /// [`Directory::create`], stamping `createdDateTime` with `now`.
    pub fn create_at(&mut self, user: Value, now: OffsetDateTime) -> Result<&User, DirectoryError> {
        let id = user.get("id").and_then(Value::as_str).ok_or(DirectoryError::MissingId)?;
        if self.by_id.contains_key(id) {
            return Err(DirectoryError::Exists(id.to_owned()));
        }
        self.insert_at(user, now)
    }

    /// Merges `patch` into the user: present keys replace, `null` clears.
    pub fn update(&mut self, id: &str, patch: Value) -> Result<&User, DirectoryError> {
        let patch = into_object(patch)?;
        if let Some(new_id) = patch.get("id")
            && new_id.as_str() != Some(id)
        {
            return Err(DirectoryError::IdChange(id.to_owned()));
        }
        let seq = *self.by_id.get(id).ok_or_else(|| DirectoryError::NotFound(id.to_owned()))?;
        self.version += 1;
        let version = self.version;
        let entry = self.entries.get_mut(&seq).ok_or_else(|| DirectoryError::NotFound(id.to_owned()))?;
        entry.user.extend(patch);
        entry.changed = version;
        Ok(&entry.user)
    }

    /// Sets `accountEnabled`, which is how Entra disables a user.
    pub fn set_enabled(&mut self, id: &str, enabled: bool) -> Result<&User, DirectoryError> {
        self.update(id, serde_json::json!({ "accountEnabled": enabled }))
    }

    /// Deletes a user, leaving a tombstone for delta.
    pub fn remove(&mut self, id: &str, how: Removal) -> Result<(), DirectoryError> {
        self.remove_at(id, how, OffsetDateTime::now_utc())
    }

    /// [`Directory::remove`]; a soft delete stamps `deletedDateTime` with `now`.
    pub fn remove_at(&mut self, id: &str, how: Removal, now: OffsetDateTime) -> Result<(), DirectoryError> {
        let seq = self.by_id.remove(id).ok_or_else(|| DirectoryError::NotFound(id.to_owned()))?;
        self.version += 1;
        if let Some(entry) = self.entries.get_mut(&seq) {
            entry.removed = Some(how);
            entry.changed = self.version;
            if how == Removal::SoftDeleted {
                entry.user.insert("deletedDateTime".into(), Value::String(rfc3339(now)));
            }
        }
        Ok(())
    }
}

fn into_object(value: Value) -> Result<User, DirectoryError> {
    match value {
        Value::Object(map) => Ok(map),
        Value::Array(_) => Err(DirectoryError::NotAnObject("an array")),
        Value::String(_) => Err(DirectoryError::NotAnObject("a string")),
        Value::Number(_) => Err(DirectoryError::NotAnObject("a number")),
        Value::Bool(_) => Err(DirectoryError::NotAnObject("a boolean")),
        Value::Null => Err(DirectoryError::NotAnObject("null")),
    }
}

/// Graph's `createdDateTime` shape: whole seconds, UTC, `Z`.
fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0).unwrap_or(t).format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(id: &str) -> Value {
        json!({ "id": id, "displayName": id })
    }

    #[test]
    fn every_change_bumps_the_version_and_stamps_the_entry() {
        let mut d = Directory::default();
        d.insert(user("a")).unwrap();
        d.insert(user("b")).unwrap();
        assert_eq!(d.version(), 2);
        d.update("a", json!({"department": "Sales"})).unwrap();
        d.set_enabled("b", false).unwrap();
        assert_eq!(d.version(), 4);
        let changed: Vec<_> = d.entries_after(None).filter(|e| e.changed_since(2)).map(|e| e.id()).collect();
        assert_eq!(changed, ["a", "b"]);
        assert_eq!(d.get("b").unwrap()["accountEnabled"], json!(false));
    }

    #[test]
    fn deletion_leaves_a_tombstone_unless_the_client_never_saw_the_user() {
        let mut d = Directory::default();
        d.insert(user("old")).unwrap();
        let seen_at = d.version();
        d.insert(user("new")).unwrap();
        d.remove("old", Removal::Deleted).unwrap();
        d.remove("new", Removal::SoftDeleted).unwrap();
        assert!(d.get("old").is_none());
        assert_eq!(d.len(), 0);
        let reported: Vec<_> = d.entries_after(None).filter(|e| e.changed_since(seen_at)).map(|e| e.id()).collect();
        assert_eq!(reported, ["old"]);
        assert_eq!(d.remove("old", Removal::Deleted), Err(DirectoryError::NotFound("old".into())));
    }

    #[test]
    fn duplicates_are_kept_but_create_refuses_them() {
        let mut d = Directory::default();
        d.insert(user("x")).unwrap();
        d.insert(json!({"id": "x", "displayName": "twin"})).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.get("x").unwrap()["displayName"], "x");
        assert_eq!(d.create(user("x")).unwrap_err(), DirectoryError::Exists("x".into()));
        assert_eq!(d.update("x", json!({"id": "y"})).unwrap_err(), DirectoryError::IdChange("x".into()));
    }

    #[test]
    fn paging_positions_survive_inserts_and_deletes() {
        let mut d = Directory::default();
        for id in ["a", "b", "c"] {
            d.insert(user(id)).unwrap();
        }
        let after_a = d.entries_after(None).next().unwrap().seq;
        d.remove("b", Removal::Deleted).unwrap();
        d.insert(user("d")).unwrap();
        let rest: Vec<_> = d.entries_after(Some(after_a)).filter(|e| e.is_live()).map(|e| e.id()).collect();
        assert_eq!(rest, ["c", "d"]);
    }

    #[test]
    fn reset_kills_old_generations() {
        let mut d = Directory::default();
        d.insert(user("a")).unwrap();
        let g = d.generation();
        d.reset();
        assert!(d.is_empty());
        assert_eq!(d.version(), 0);
        assert!(d.generation() > g);
        d.expire_delta_tokens();
        assert_eq!(d.generation(), g + 2);
    }
}
