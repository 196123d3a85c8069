//! What the Graph and Okta clients share: how the HTTP client is built, which
//! URLs may be called, and how servers tell us when to come back.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::HeaderMap;
use url::Url;
use xaas_core::redact::redact;

/// Why a configured URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{setting}: {value:?} is not a valid URL: {reason}")]
    Invalid { setting: String, value: String, reason: String },
    #[error(
        "{setting}: {value:?} uses http to a non-loopback host; use https, or set allow_insecure_http = true for a test network"
    )]
    InsecureHttp { setting: String, value: String },
    #[error("{setting}: {value:?} must be an http or https URL")]
    BadScheme { setting: String, value: String },
}

/// Parses a configured base URL and applies the transport policy: `https`
/// everywhere, plain `http` only to loopback (the sandbox) unless explicitly
/// allowed. `setting` names the config key, so the error says what to fix.
/// Errors show the value redacted.
pub fn parse_base_url(setting: &str, value: &str, allow_insecure_http: bool) -> Result<Url, UrlError> {
    let shown = || redact(value);
    let url = Url::parse(value).map_err(|e| UrlError::Invalid {
        setting: setting.into(),
        value: shown(),
        reason: e.to_string(),
    })?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_insecure_http || is_loopback(&url) => Ok(url),
        "http" => Err(UrlError::InsecureHttp { setting: setting.into(), value: shown() }),
        _ => Err(UrlError::BadScheme { setting: setting.into(), value: shown() }),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The HTTP client both API clients use: rustls, bounded timeouts, no
/// automatic redirects to other hosts (a redirect would carry our token).
pub fn build_client(user_agent: &str, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(user_agent)
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// `Retry-After` as Graph sends it: decimal seconds, possibly fractional
/// (`2.128`), or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = when - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// Okta's `X-Rate-Limit-Reset` (UTC epoch seconds) as a wait from `now`.
pub fn okta_rate_limit_reset(headers: &HeaderMap, now: time::OffsetDateTime) -> Option<Duration> {
    let reset: i64 = headers.get("x-rate-limit-reset")?.to_str().ok()?.trim().parse().ok()?;
    let wait = reset - now.unix_timestamp();
    Some(Duration::from_secs(wait.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn https_everywhere_http_only_on_loopback() {
        assert!(parse_base_url("okta.base_url", "https://acme.okta.com", false).is_ok());
        assert!(parse_base_url("okta.base_url", "http://127.0.0.1:8080", false).is_ok());
        assert!(parse_base_url("okta.base_url", "http://localhost:8080", false).is_ok());
        assert!(parse_base_url("okta.base_url", "http://[::1]:8080", false).is_ok());
        let err = parse_base_url("okta.base_url", "http://acme.okta.com", false).unwrap_err();
        assert!(matches!(err, UrlError::InsecureHttp { .. }));
        assert!(err.to_string().starts_with("okta.base_url:"), "{err}");
        assert!(parse_base_url("okta.base_url", "http://sim:8080", true).is_ok());
        assert!(matches!(parse_base_url("x", "ftp://a", false), Err(UrlError::BadScheme { .. })));
        assert!(matches!(parse_base_url("x", "nope", false), Err(UrlError::Invalid { .. })));
        let err = parse_base_url("x", "http://u:hunter2@okta.example.com", false).unwrap_err().to_string();
        assert!(err.contains("http://***@okta.example.com") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn retry_after_accepts_fractions() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2.128"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(2128)));
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after", HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&h), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn okta_reset_is_a_wait_from_now() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_000).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-rate-limit-reset", HeaderValue::from_static("1012"));
        assert_eq!(okta_rate_limit_reset(&h, now), Some(Duration::from_secs(12)));
        h.insert("x-rate-limit-reset", HeaderValue::from_static("900"));
        assert_eq!(okta_rate_limit_reset(&h, now), Some(Duration::ZERO));
    }
}
