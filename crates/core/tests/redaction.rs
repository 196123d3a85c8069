//! Whatever broker URL or address list an operator writes, well-formed or
//! not, `redact` never lets a password through, raw or percent-decoded.
//!
//! Each password is built around a marker of 16 hex digits between `Pw` and
//! `wP`, so that finding it in the output means a leak and not a chance
//! match with a host or a vhost (a one-letter password is in any text). Around
//! the marker go reserved characters only, never letters: a password holding
//! a separator followed by `amqp://` cannot be told from a second address
//! (the module says so), and letters could spell one.

use proptest::prelude::*;
use xaas_core::redact::redact;

/// Percent-encodes every byte that is not a letter or a digit.
fn encode(raw: &str) -> String {
    raw.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Percent-encodes every byte, letters and digits too.
fn encode_all(raw: &str) -> String {
    raw.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A secret as it is written into the URL.
#[derive(Debug, Clone)]
struct Secret {
    marker: String,
    raw: String,
    written: String,
}

fn marker() -> impl Strategy<Value = String> {
    "[0-9a-f]{16}".prop_map(|hex| format!("Pw{hex}wP"))
}

/// Reserved and other awkward characters, separators included; no letters.
fn awkward() -> impl Strategy<Value = String> {
    r##"[ !"#$%&'()*+,/:;<=>?@\[\\\]^_`{|}~.é€0-9-]{0,6}"##
}

/// A password: `raw` honours no URL rule, the others are encoded.
fn password(allow_raw: bool) -> impl Strategy<Value = Secret> {
    (awkward(), marker(), awkward(), 0..if allow_raw { 3 } else { 2 }).prop_map(|(before, marker, after, how)| {
        let raw = format!("{before}{marker}{after}");
        let written = match how {
            0 => encode(&raw),
            1 => encode_all(&raw),
            _ => raw.clone(),
        };
        Secret { marker, raw, written }
    })
}

fn user() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z][a-z0-9._-]{0,8}", "[a-z]{1,4}%40[a-z]{1,4}", Just(String::new())]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5}){0,2}",
        (0u8..=255, 0u8..=255).prop_map(|(a, b)| format!("10.{a}.{b}.1")),
        Just("[::1]".to_string()),
        Just("localhost".to_string()),
    ]
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), any::<u16>().prop_map(|p| format!(":{p}"))]
}

fn vhost() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), Just("/".to_string()), Just("/%2f".to_string()), "/[a-z_-]{1,8}"]
}

/// A query string, maybe with a secret parameter of its own.
fn query() -> impl Strategy<Value = (String, Option<Secret>)> {
    let name = prop_oneof![Just("password"), Just("client_secret"), Just("token"), Just("api_key"), Just("Auth")];
    prop_oneof![
        Just((String::new(), None)),
        (1u16..600).prop_map(|h| (format!("?heartbeat={h}"), None)),
        (1u16..600, name, password(false)).prop_map(|(h, name, secret)| {
            (format!("?heartbeat={h}&{name}={}&channel_max=9", secret.written), Some(secret))
        }),
    ]
}

/// One entry of the list and the secrets in it.
fn entry() -> impl Strategy<Value = (String, Vec<Secret>)> {
    let scheme = prop_oneof![Just("amqp"), Just("amqps"), Just("AMQP"), Just("http"), Just("https")];
    (scheme, user(), password(true), password(false), host(), port(), vhost(), query(), 0..9).prop_map(
        |(scheme, user, pw, encoded_pw, host, port, vhost, (query, query_secret), shape)| {
            let (text, pw) = match shape {
                // Well-formed (when the password is encoded).
                0..=2 => (format!("{scheme}://{user}:{}@{host}{port}{vhost}{query}", pw.written), pw),
                // No scheme, a mangled scheme, an unknown scheme.
                3 => (format!("{user}:{}@{host}{port}{vhost}", pw.written), pw),
                4 => (format!("{scheme}:/{user}:{}@{host}{vhost}", pw.written), pw),
                5 => (format!("ftp://{user}:{}@{host}{vhost}", pw.written), pw),
                // No host, or a bad port.
                6 => (format!("{scheme}://{user}:{}@", pw.written), pw),
                7 => (format!("{scheme}://{user}:{}@{host}:99x{vhost}", pw.written), pw),
                // The host went missing: an `@` in the password would make
                // what follows it the host, so it is encoded.
                _ => (format!("{scheme}://{user}:{}", encoded_pw.written), encoded_pw),
            };
            let secrets = std::iter::once(pw).chain(query_secret).collect();
            (text, secrets)
        },
    )
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(","), Just(" "), Just(";"), Just(" , "), Just("\n"), Just(";  "), Just(",,")]
}

/// A list of entries joined by separators, maybe with stray ones around.
fn address_list() -> impl Strategy<Value = (String, Vec<Secret>)> {
    (prop::collection::vec((entry(), separator()), 1..5), prop_oneof![Just(""), Just(" "), Just(",")]).prop_map(
        |(entries, edge)| {
            let mut text = edge.to_string();
            let mut secrets = Vec::new();
            for (i, ((entry, s), sep)) in entries.into_iter().enumerate() {
                if i > 0 {
                    text.push_str(sep);
                }
                text.push_str(&entry);
                secrets.extend(s);
            }
            text.push_str(edge);
            (text, secrets)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn no_password_survives_redaction((text, secrets) in address_list()) {
        let shown = redact(&text);
        let decoded = decode(&shown);
        for s in &secrets {
            prop_assert!(!shown.contains(&s.raw), "raw password {:?} in {shown:?} (from {text:?})", s.raw);
            prop_assert!(!shown.contains(&s.written), "password as written {:?} in {shown:?} (from {text:?})", s.written);
            prop_assert!(!decoded.contains(&s.raw), "decoded password {:?} in {shown:?} (from {text:?})", s.raw);
            prop_assert!(!decoded.contains(&s.marker), "marker {} in {shown:?} (from {text:?})", s.marker);
        }
    }

    #[test]
    fn redaction_is_idempotent((text, _) in address_list()) {
        let once = redact(&text);
        prop_assert_eq!(redact(&once), once.clone());
    }
}

#[test]
fn hosts_of_well_formed_lists_stay_visible() {
    let shown = redact("amqp://u:p%40ss@rabbit-1:5672/%2f, amqps://u:p%2Css@rabbit-2/vh?heartbeat=10");
    assert_eq!(shown, "amqp://***@rabbit-1:5672/%2f, amqps://***@rabbit-2/vh?heartbeat=10");
}
