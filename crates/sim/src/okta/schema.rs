//! An optional strict profile schema, so the sandbox can refuse what a real
//! org refuses after schema drift: a profile attribute the identity source's
//! profile schema does not define.
//!
//! Off by default: the sandbox then takes any string attribute (an org whose
//! schema has every attribute the mapping sends). `PUT /sim/okta/schema`
//! declares the attributes Okta knows; a bulk-upsert that carries any other
//! is refused whole with a 400 `E0000001`, like every other bad profile.
//! How the `errorCauses` name the culprits is part of the declaration,
//! because a client has to cope with both:
//! - `perProfile` (default): one cause per refused profile, naming its
//!   position and `externalId`, as the sandbox's other validation causes do;
//! - `perAttribute`: one cause per unknown attribute, naming no profile, so
//!   the client must split the request to find the refused profiles.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The attributes an identity source's profile schema defines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSchema {
    /// Every attribute name Okta accepts in a profile; any other is refused.
    pub attributes: BTreeSet<String>,
    #[serde(default)]
    pub causes: CauseStyle,
}

/// How a refusal's `errorCauses` name what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CauseStyle {
    /// One cause per refused profile, with its position and `externalId`.
    #[default]
    PerProfile,
    /// One cause per unknown attribute; no profile named.
    PerAttribute,
}

impl ProfileSchema {
    /// Whether the schema defines `attribute`.
    pub fn defines(&self, attribute: &str) -> bool {
        self.attributes.contains(attribute)
    }

    /// The problem Okta reports for an attribute the schema lacks.
    pub fn undefined(attribute: &str) -> String {
        format!("Property name '{attribute}' is not defined in the profile schema of this identity source")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn declarations_read_like_the_admin_api_documents_them() {
        let s: ProfileSchema = serde_json::from_value(json!({"attributes": ["userName", "email"]})).unwrap();
        assert_eq!(s.causes, CauseStyle::PerProfile);
        assert!(s.defines("email") && !s.defines("costCenter"));
        let s: ProfileSchema = serde_json::from_value(json!({"attributes": [], "causes": "perAttribute"})).unwrap();
        assert_eq!(s.causes, CauseStyle::PerAttribute);
        assert!(serde_json::from_value::<ProfileSchema>(json!({"attributes": [], "strict": true})).is_err());
    }
}
