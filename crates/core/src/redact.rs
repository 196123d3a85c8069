//! Masking credentials in anything that is, or was meant to be, a URL or a
//! list of URLs (AMQP, HTTP(S), any scheme), before it is printed.
//!
//! It works on the text, not on a parsed URL: the URL most likely to be
//! printed is the one that failed to parse, in the error that says so, and a
//! password with a raw `/`, `#` or `?` makes a parser see a different URL
//! than the operator meant. The rules err on the side of hiding:
//! - the text is cut into entries: a new one starts wherever a separator
//!   (whitespace, `,` or `;`) is followed by `amqp://`, `amqps://`,
//!   `http://` or `https://`;
//! - in an entry, everything between its `scheme://` and its last `@` is
//!   userinfo and shown as `***` (an `@` further on, in a query or in text
//!   after the URL, hides more than needed, never less); an entry that does
//!   not open with `scheme://` is masked from its start;
//! - a URL without `@` whose host is followed by `:` and something other
//!   than a port number is a `user:password` that lost its host: everything
//!   after the `:` is masked;
//! - the value of a query or fragment parameter whose name suggests a secret
//!   (`password`, `client_secret`, `token`, `api_key`, …) is masked.
//!
//! A password that itself holds a separator followed by one of those schemes
//! cannot be told from a second address; percent-encode it.

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// `text` with every credential it may carry replaced by [`MASK`].
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    for boundary in entry_starts(text) {
        mask_entry(&text[start..boundary], &mut out);
        start = boundary;
    }
    mask_entry(&text[start..], &mut out);
    out
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || c == ',' || c == ';'
}

/// Where entries after the first one start.
fn entry_starts(text: &str) -> impl Iterator<Item = usize> + '_ {
    const SCHEMES: [&[u8]; 4] = [b"amqp://", b"amqps://", b"http://", b"https://"];
    let opens_url = |i: usize| {
        let rest = &text.as_bytes()[i..];
        SCHEMES.iter().any(|s| rest.len() >= s.len() && rest[..s.len()].eq_ignore_ascii_case(s))
    };
    let mut previous = None;
    text.char_indices().filter_map(move |(i, c)| {
        let after_separator = previous.is_some_and(is_separator) && !is_separator(c);
        previous = Some(c);
        (after_separator && opens_url(i)).then_some(i)
    })
}

fn mask_entry(entry: &str, out: &mut String) {
    // Separators before the next entry stay as they are.
    let body = entry.trim_end_matches(is_separator);
    let trailing = &entry[body.len()..];
    let after_scheme = scheme_len(body).unwrap_or(0);
    let rest = match body.rfind('@') {
        Some(at) => {
            // An `@` before the scheme: the text is not the URL it looks like.
            let from = if after_scheme <= at { after_scheme } else { 0 };
            out.push_str(&body[..from]);
            out.push_str(MASK);
            &body[at..]
        }
        None => match lost_host_colon(&body[after_scheme..]).filter(|_| after_scheme > 0) {
            Some(colon) => {
                out.push_str(&body[..after_scheme + colon + 1]);
                out.push_str(MASK);
                out.push_str(trailing);
                return;
            }
            None => {
                out.push_str(&body[..after_scheme]);
                &body[after_scheme..]
            }
        },
    };
    mask_parameters(rest, out);
    out.push_str(trailing);
}

/// The length of `scheme://` when `entry` opens with one. A `://` further
/// on (inside a password, say) opens nothing.
fn scheme_len(entry: &str) -> Option<usize> {
    let scheme = entry.find("://")?;
    let mut chars = entry[..scheme].chars();
    let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_is_scheme = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_is_letter && rest_is_scheme).then_some(scheme + 3)
}

/// In `host[:port]…` without userinfo: the position of a `:` that is not
/// followed by a port number, which makes `host:…` a `user:password`.
fn lost_host_colon(authority_on: &str) -> Option<usize> {
    let end = authority_on.find(['/', '?', '#']).unwrap_or(authority_on.len());
    let authority = &authority_on[..end];
    // An IPv6 literal holds colons of its own.
    let host_end = if authority.starts_with('[') { authority.find(']').map_or(0, |i| i + 1) } else { 0 };
    let colon = host_end + authority[host_end..].find(':')?;
    let port = &authority[colon + 1..];
    let is_port = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    (!is_port).then_some(colon)
}

/// Masks the values of secret-looking parameters after the first `?` or `#`.
fn mask_parameters(rest: &str, out: &mut String) {
    let Some(q) = rest.find(['?', '#']) else {
        out.push_str(rest);
        return;
    };
    out.push_str(&rest[..=q]);
    let mut params = &rest[q + 1..];
    loop {
        let end = params.find(['&', ';', '#']).unwrap_or(params.len());
        let param = &params[..end];
        match param.split_once('=') {
            Some((name, _)) if names_a_secret(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(param),
        }
        let Some(delimiter) = params[end..].chars().next() else { return };
        out.push(delimiter);
        params = &params[end + 1..];
    }
}

fn names_a_secret(name: &str) -> bool {
    const HINTS: [&str; 8] = ["pass", "pwd", "secret", "token", "key", "sig", "auth", "cred"];
    let decoded: String = url::form_urlencoded::parse(name.as_bytes()).map(|(k, _)| k.into_owned()).collect();
    let name = decoded.to_ascii_lowercase();
    HINTS.iter().any(|hint| name.contains(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_masked_and_the_rest_kept() {
        let cases = [
            ("amqp://guest:s3cret@rabbit:5672/%2f", "amqp://***@rabbit:5672/%2f"),
            ("amqp://rabbit/%2f", "amqp://rabbit/%2f"),
            ("amqps://user@rabbit/vh?heartbeat=30", "amqps://***@rabbit/vh?heartbeat=30"),
            ("https://okta-admin:hunter2@acme.okta.com/api", "https://***@acme.okta.com/api"),
            ("amqp://[::1]:5672/%2f", "amqp://[::1]:5672/%2f"),
            ("", ""),
            ("not a url", "not a url"),
        ];
        for (raw, shown) in cases {
            assert_eq!(redact(raw), shown, "{raw}");
        }
    }

    #[test]
    fn every_address_of_a_list_is_masked_whatever_the_separator() {
        for sep in [",", " ", ";", " , ", "\n", ",\t"] {
            let raw = format!("amqp://u:PW1@h1/%2f{sep}amqp://u:PW2@h2:5673/%2f{sep}AMQPS://h3");
            assert_eq!(redact(&raw), format!("amqp://***@h1/%2f{sep}amqp://***@h2:5673/%2f{sep}AMQPS://h3"));
        }
    }

    #[test]
    fn urls_that_do_not_parse_are_masked_too() {
        let cases = [
            // Raw reserved characters in the password.
            ("amqp://u:p/a#s?s@w@rabbit/%2f", "amqp://***@rabbit/%2f"),
            ("amqp://u:pa,ss@h1/,amqp://u:pa ss@h2/", "amqp://***@h1/,amqp://***@h2/"),
            ("amqp://u:s3cret@[bad", "amqp://***@[bad"),
            // No scheme, or a mangled one.
            ("guest:s3cret@rabbit:5672", "***@rabbit:5672"),
            ("amqp:/guest:s3cret@rabbit", "***@rabbit"),
            ("ftp://u:s3cret@h1,amqp://h2", "ftp://***@h1,amqp://h2"),
            ("u:s3cr://et@rabbit", "***@rabbit"),
            // A password whose host went missing.
            ("amqp://guest:s3cret", "amqp://guest:***"),
            ("amqp://guest:s3/cr?et", "amqp://guest:***"),
            ("amqp://guest:", "amqp://guest:***"),
            ("amqp://rabbit:5672/%2f", "amqp://rabbit:5672/%2f"),
            ("amqp://[::1]:x", "amqp://[::1]:***"),
        ];
        for (raw, shown) in cases {
            assert_eq!(redact(raw), shown, "{raw}");
        }
    }

    #[test]
    fn secret_parameters_are_masked() {
        let cases = [
            ("https://h/cb?client_secret=abc&state=1", "https://h/cb?client_secret=***&state=1"),
            ("amqp://h/%2f?heartbeat=30&password=abc", "amqp://h/%2f?heartbeat=30&password=***"),
            ("https://h/#access_token=abc;state=x", "https://h/#access_token=***;state=x"),
            ("https://h/?API%5FKEY=abc", "https://h/?API%5FKEY=***"),
            ("https://h/?q=1&Token=a%26b", "https://h/?q=1&Token=***"),
            ("https://h/?token", "https://h/?token"),
        ];
        for (raw, shown) in cases {
            assert_eq!(redact(raw), shown, "{raw}");
        }
    }

    #[test]
    fn text_around_a_url_is_kept() {
        assert_eq!(redact("broker.url: amqp://u:p@h:1/%2f is down"), "broker.url: amqp://***@h:1/%2f is down");
    }
}
