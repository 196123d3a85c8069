//! One page of `/users` or `/users/delta`, as the fetcher passes it on.

use serde_json::Value;
use xaas_core::messages::RemovedUser;

/// Users stay raw JSON: the mapper owns their interpretation, and a user the
/// mapper cannot read is rejected alone rather than failing the page here.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphPage {
    pub users: Vec<Value>,
    /// Items carrying `@removed` (delta rounds; the initial round too).
    pub removed: Vec<RemovedUser>,
    /// `@odata.nextLink`, to be followed verbatim.
    pub next_link: Option<String>,
    /// `@odata.deltaLink`, on the last page of a delta round.
    pub delta_link: Option<String>,
}

impl GraphPage {
    /// No page follows this one.
    pub fn is_last(&self) -> bool {
        self.next_link.is_none()
    }

    /// Reads a 2xx body. Only the envelope is checked; unknown fields are
    /// ignored. `Err` carries the reason the page is unusable.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, String> {
        let Value::Object(mut envelope) =
            serde_json::from_slice::<Value>(body).map_err(|e| format!("not JSON: {e}"))?
        else {
            return Err("the body is not a JSON object".into());
        };
        let items = match envelope.remove("value") {
            Some(Value::Array(items)) => items,
            Some(_) => return Err("`value` is not an array".into()),
            None => return Err("`value` is missing".into()),
        };
        let next_link = link(&envelope, "@odata.nextLink")?;
        let delta_link = link(&envelope, "@odata.deltaLink")?;

        let mut page = GraphPage { users: Vec::with_capacity(items.len()), removed: Vec::new(), next_link, delta_link };
        for item in items {
            match item.get("@removed") {
                Some(removed) => page.removed.push(removed_user(&item, removed)?),
                None => page.users.push(item),
            }
        }
        Ok(page)
    }
}

fn link(envelope: &serde_json::Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match envelope.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(link)) => Ok(Some(link.clone())),
        Some(_) => Err(format!("`{name}` is not a string")),
    }
}

/// `{"id": "...", "@removed": {"reason": "changed" | "deleted"}}`. Without an
/// id the removal cannot be applied, and dropping it silently would leave a
/// user active in Okta, so the page is refused instead.
fn removed_user(item: &Value, removed: &Value) -> Result<RemovedUser, String> {
    let id = item.get("id").and_then(Value::as_str).ok_or("an `@removed` item has no string `id`")?;
    let reason = removed
        .get("reason")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the `@removed` item {id} has no string `reason`"))?;
    Ok(RemovedUser { id: id.to_owned(), reason: reason.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removed_items_are_split_from_users() {
        // The delta fixture of reference/microsoft-graph.md §6.3.
        let body = json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(displayName,givenName,surname)",
            "@odata.nextLink": "https://graph.microsoft.com/v1.0/users/delta?$skiptoken=oEBwdSP6",
            "value": [
                {"displayName":"Cameron White","givenName":"Cameron","surname":"White","id":"ffff7b1a-13b6-477b-8c0c-380905cd99f7"},
                {"id": "86462606-fde0-4fc4-9e0c-a20eb73e54c6", "@removed": {"reason": "deleted"}},
                {"displayName": "Conf Room Adams", "id": "6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0"}
            ]
        });
        let page = GraphPage::parse(body.to_string().as_bytes()).unwrap();
        let ids: Vec<&str> = page.users.iter().map(|u| u["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["ffff7b1a-13b6-477b-8c0c-380905cd99f7", "6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0"]);
        assert_eq!(
            page.removed,
            [RemovedUser { id: "86462606-fde0-4fc4-9e0c-a20eb73e54c6".into(), reason: "deleted".into() }]
        );
        assert_eq!(page.next_link.as_deref(), Some("https://graph.microsoft.com/v1.0/users/delta?$skiptoken=oEBwdSP6"));
        assert_eq!(page.delta_link, None);
        assert!(!page.is_last());
    }

    #[test]
    fn users_pass_through_untouched() {
        let user = json!({"id": "1", "extension_abc_costCenter": "42", "@odata.type": "#microsoft.graph.user"});
        let page =
            GraphPage::parse(json!({"value": [user.clone()], "@odata.deltaLink": "d"}).to_string().as_bytes()).unwrap();
        assert_eq!(page.users, [user]);
        assert_eq!(page.delta_link.as_deref(), Some("d"));
        assert!(page.is_last());
    }

    #[test]
    fn a_page_without_a_value_array_is_refused() {
        for body in [r#"{"users": []}"#, r#"{"value": {}}"#, r#"[]"#, "<html>", r#"{"value":[],"@odata.nextLink":3}"#] {
            assert!(GraphPage::parse(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn a_removal_without_id_or_reason_is_refused() {
        for item in [json!({"@removed": {"reason": "deleted"}}), json!({"id": "1", "@removed": {}})] {
            let body = json!({"value": [item]}).to_string();
            assert!(GraphPage::parse(body.as_bytes()).is_err(), "{body}");
        }
    }
}
