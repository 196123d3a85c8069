//! Okta's schema for an identity-source user profile
//! (`IdentitySourceUserProfileForUpsert`, reference §4.2), checked before a
//! profile is sent, so that one bad record is rejected alone instead of
//! failing the bulk request that carries 199 good ones.
//!
//! Lengths are counted in characters (Unicode scalar values), as the JSON
//! Schema `maxLength` of the spec is, not in bytes.

use std::collections::BTreeMap;

/// Length cap for custom attributes (displayName, department, …). Okta's spec
/// gives custom attributes no length; an admin can set one in the Profile
/// Editor, which we cannot see. 1024 characters is our own cap: far above any
/// real directory value, and low enough that a runaway field is caught here
/// rather than by Okta mid-request.
pub const MAX_CUSTOM_ATTRIBUTE_CHARS: usize = 1024;

/// What Okta accepts for one attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeRule {
    pub min_chars: usize,
    pub max_chars: usize,
    /// `format: email` in the spec.
    pub email: bool,
}

/// The attributes every upserted profile must carry. The bulk schema lists
/// none, but Okta cannot create a user without a login and an email (the
/// single-user schema requires both).
pub const REQUIRED: [&str; 2] = ["userName", "email"];

/// The rule for `attr`: the spec's base attributes, then the custom cap.
pub fn rule_for(attr: &str) -> AttributeRule {
    let (min_chars, max_chars, email) = match attr {
        "userName" => (1, 100, false),
        "firstName" | "lastName" => (1, 50, false),
        "email" | "secondEmail" => (5, 100, true),
        "mobilePhone" => (0, 100, false),
        "homeAddress" => (0, 4096, false),
        _ => (0, MAX_CUSTOM_ATTRIBUTE_CHARS, false),
    };
    AttributeRule { min_chars, max_chars, email }
}

/// Why Okta would refuse a profile. The first problem found is reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("Okta {attr} is required")]
    Missing { attr: &'static str },
    #[error("{attr} is {len} characters long; Okta allows {min} to {max}")]
    Length { attr: String, len: usize, min: usize, max: usize },
    #[error("{attr} {value:?} is not an email address: {why}")]
    Email { attr: String, value: String, why: &'static str },
}

impl Violation {
    /// The Okta attribute at fault.
    pub fn attr(&self) -> &str {
        match self {
            Self::Missing { attr } => attr,
            Self::Length { attr, .. } | Self::Email { attr, .. } => attr,
        }
    }
}

/// Checks a profile about to be upserted against Okta's schema.
pub fn validate_profile(profile: &BTreeMap<String, String>) -> Result<(), Violation> {
    for attr in REQUIRED {
        if !profile.contains_key(attr) {
            return Err(Violation::Missing { attr });
        }
    }
    profile.iter().try_for_each(|(attr, value)| validate_attribute(attr, value))
}

/// Checks one attribute value against [`rule_for`] its name.
pub fn validate_attribute(attr: &str, value: &str) -> Result<(), Violation> {
    let rule = rule_for(attr);
    let len = value.chars().count();
    if len < rule.min_chars || len > rule.max_chars {
        return Err(Violation::Length { attr: attr.into(), len, min: rule.min_chars, max: rule.max_chars });
    }
    if rule.email {
        check_email(value).map_err(|why| Violation::Email { attr: attr.into(), value: value.into(), why })?;
    }
    Ok(())
}

/// A pragmatic email check, not RFC 5322: what a directory address looks
/// like, and what Okta's `format: email` is known to refuse. Returns why not.
pub fn check_email(value: &str) -> Result<(), &'static str> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains spaces or control characters");
    }
    let Some((local, domain)) = value.split_once('@') else {
        return Err("it has no '@'");
    };
    if domain.contains('@') {
        return Err("it has more than one '@'");
    }
    if local.is_empty() {
        return Err("nothing before the '@'");
    }
    if !domain.contains('.') {
        return Err("the domain has no '.'");
    }
    if domain.split('.').any(str::is_empty) {
        return Err("the domain has an empty label");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn minimal() -> BTreeMap<String, String> {
        profile(&[("userName", "adele@contoso.com"), ("email", "adele@contoso.com")])
    }

    #[test]
    fn a_minimal_profile_is_valid() {
        assert_eq!(validate_profile(&minimal()), Ok(()));
    }

    #[test]
    fn user_name_and_email_are_required() {
        let mut p = minimal();
        p.remove("email");
        assert_eq!(validate_profile(&p), Err(Violation::Missing { attr: "email" }));
        let mut p = minimal();
        p.remove("userName");
        assert_eq!(validate_profile(&p), Err(Violation::Missing { attr: "userName" }));
    }

    #[test]
    fn lengths_are_counted_in_characters() {
        // 50 two-byte characters: 100 bytes, but 50 characters, so allowed.
        let mut p = minimal();
        p.insert("firstName".into(), "é".repeat(50));
        assert_eq!(validate_profile(&p), Ok(()));
        p.insert("firstName".into(), "é".repeat(51));
        assert_eq!(validate_profile(&p), Err(Violation::Length { attr: "firstName".into(), len: 51, min: 1, max: 50 }));
    }

    #[test]
    fn each_base_attribute_has_its_spec_limit() {
        for (attr, max) in [
            ("userName", 100),
            ("lastName", 50),
            ("mobilePhone", 100),
            ("homeAddress", 4096),
            ("department", MAX_CUSTOM_ATTRIBUTE_CHARS),
        ] {
            assert_eq!(validate_attribute(attr, &"x".repeat(max)), Ok(()), "{attr}");
            let err = validate_attribute(attr, &"x".repeat(max + 1)).unwrap_err();
            assert!(matches!(err, Violation::Length { len, .. } if len == max + 1), "{attr}: {err}");
            assert_eq!(err.attr(), attr);
        }
        assert!(validate_attribute("lastName", "").is_err());
        assert_eq!(validate_attribute("mobilePhone", ""), Ok(()));
    }

    #[test]
    fn emails_have_length_and_format_rules() {
        let long = format!("{}@example.com", "a".repeat(89));
        assert_eq!(long.len(), 101);
        assert!(matches!(validate_attribute("email", &long), Err(Violation::Length { max: 100, .. })));
        assert!(matches!(validate_attribute("email", "a@b."), Err(Violation::Length { min: 5, .. })));
        for (bad, why) in [
            ("adele.contoso.com", "it has no '@'"),
            ("a@b@contoso.com", "it has more than one '@'"),
            ("@contoso.com", "nothing before the '@'"),
            ("adele@localhost", "the domain has no '.'"),
            ("adele@contoso..com", "the domain has an empty label"),
            ("adele@contoso.com.", "the domain has an empty label"),
            ("adele vance@contoso.com", "it contains spaces or control characters"),
            ("adele@contoso.com\n", "it contains spaces or control characters"),
        ] {
            assert_eq!(check_email(bad), Err(why), "{bad:?}");
        }
        let err = validate_attribute("secondEmail", "adele.contoso.com").unwrap_err();
        assert_eq!(err.to_string(), "secondEmail \"adele.contoso.com\" is not an email address: it has no '@'");
        assert_eq!(check_email("AdeleV@contoso.com"), Ok(()));
        assert_eq!(check_email("zoë@exämple.de"), Ok(()));
    }
}
