//! `xaas sample upload`: the original workflow's "Upload All Sample Users"
//! and "Upload Sample User to Azure AD" — creates the sample table's users
//! in the source with Graph `POST /v1.0/users`. Idempotent: a user whose
//! userPrincipalName exists is skipped and reported as such, so running it
//! twice creates nothing the second time.

use serde_json::{Map, Value, json};
use xaas_graph::{Created, GraphClient};

use crate::commands::CommandError;

/// What one upload did, per user (by userPrincipalName).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UploadReport {
    pub created: Vec<String>,
    pub existing: Vec<String>,
    /// Rows Graph would refuse whatever happens (no email, so no UPN).
    pub unusable: Vec<String>,
}

/// The body of `POST /v1.0/users` for one sample user as the sandbox's seed
/// reads it (`xaas_sim::seed::load_sample_csv`): Graph's own properties,
/// without the read-only `id`/`createdDateTime` and empty ones, with a
/// random initial password to change at first sign-in (the original used a
/// fixed one). `None` when the row has no userPrincipalName.
pub fn create_body(user: &Value, password: &str) -> Option<Value> {
    let mut body: Map<String, Value> = user
        .as_object()?
        .iter()
        .filter(|(k, v)| !matches!(k.as_str(), "id" | "createdDateTime") && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    body.get("userPrincipalName")?.as_str().filter(|u| !u.is_empty())?;
    body.insert("passwordProfile".into(), json!({ "forceChangePasswordNextSignIn": true, "password": password }));
    Some(Value::Object(body))
}

/// A password Graph's complexity rules accept; never printed.
fn initial_password() -> String {
    format!("Xs-{}!9a", uuid::Uuid::new_v4().simple())
}

/// Creates `users` in the source, one `POST` each, and prints what happened
/// to each. Stops at the first error retrying will not fix.
pub async fn upload(graph: &GraphClient, users: &[Value]) -> Result<UploadReport, CommandError> {
    let mut report = UploadReport::default();
    for (row, user) in users.iter().enumerate() {
        let Some(body) = create_body(user, &initial_password()) else {
            report.unusable.push(format!("row {}", row + 1));
            continue;
        };
        let upn = body["userPrincipalName"].as_str().unwrap_or_default().to_owned();
        match graph.create_user(&body).await {
            Ok(Created::New { .. }) => report.created.push(upn),
            Ok(Created::AlreadyExists) => report.existing.push(upn),
            Err(e) => {
                return Err(CommandError::Usage(format!(
                    "creating {upn} failed after {} created: {e}",
                    report.created.len()
                )));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_user_without_read_only_or_empty_properties_and_with_a_password() {
        let user = json!({"id": "x", "createdDateTime": "t", "userPrincipalName": "a@d.example",
                          "displayName": "A", "city": null, "accountEnabled": true});
        let body = create_body(&user, "pw").unwrap();
        assert_eq!(
            body,
            json!({"userPrincipalName": "a@d.example", "displayName": "A", "accountEnabled": true,
                   "passwordProfile": {"forceChangePasswordNextSignIn": true, "password": "pw"}})
        );
        assert_eq!(create_body(&json!({"userPrincipalName": null, "accountEnabled": false}), "pw"), None);
        assert_ne!(initial_password(), initial_password());
    }
}
