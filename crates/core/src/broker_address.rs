//! The brokers a process may connect to: `broker.url` / `AMQP_URL` holds one
//! AMQP URL or several, in order of preference, separated by commas,
//! whitespace or semicolons (the forms AMQP clients commonly accept).
//!
//! Each address keeps its URL as a secret (it carries the password) and is
//! shown, by `Display` and `Debug` alike, only through [`redact`].

use std::fmt;

use secrecy::SecretString;

use crate::redact::redact;

/// Why `broker.url` was refused. The value is never quoted unredacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerAddressError {
    #[error("holds no address; expected one or more AMQP URLs like amqp://user:password@host:5672/%2f")]
    Empty,
    #[error(
        "{which} ({shown}) {problem}; expected an AMQP URL like amqp://user:password@host:5672/%2f. Several \
         addresses are separated by commas, spaces or semicolons, so percent-encode those characters in a \
         password (%2C, %20, %3B), and '@' as %40"
    )]
    Invalid { which: String, shown: String, problem: String },
}

/// One broker: an `amqp://` or `amqps://` URL with a host.
#[derive(Clone)]
pub struct BrokerAddress {
    url: SecretString,
    shown: String,
    host: String,
    port: u16,
}

impl BrokerAddress {
    /// The URL itself, password included: for the connection only.
    pub fn url(&self) -> &SecretString {
        &self.url
    }

    /// The host as the URL names it (IPv6 literals in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The URL's port, or AMQP's default for its scheme (5672, or 5671 for amqps).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerAddress({})", self.shown)
    }
}

/// The brokers of `broker.url`, never empty, in the order they are tried.
#[derive(Clone, Debug)]
pub struct BrokerAddresses(Vec<BrokerAddress>);

impl BrokerAddresses {
    pub fn parse(text: &str) -> Result<Self, BrokerAddressError> {
        let entries: Vec<&str> =
            text.split(|c: char| c.is_whitespace() || c == ',' || c == ';').filter(|e| !e.is_empty()).collect();
        if entries.is_empty() {
            return Err(BrokerAddressError::Empty);
        }
        let which = |i: usize| {
            if entries.len() == 1 {
                "the address".to_string()
            } else {
                format!("address {} of {}", i + 1, entries.len())
            }
        };
        let addresses = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                parse_one(entry).map_err(|problem| BrokerAddressError::Invalid {
                    which: which(i),
                    shown: redact(entry),
                    problem,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(addresses))
    }

    /// The first address: the preferred broker.
    pub fn first(&self) -> &BrokerAddress {
        // `parse` refuses an empty list.
        &self.0[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &BrokerAddress> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: there is at least one address.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::str::FromStr for BrokerAddresses {
    type Err = BrokerAddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// Redacted, comma-separated.
impl fmt::Display for BrokerAddresses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, address) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            fmt::Display::fmt(address, f)?;
        }
        Ok(())
    }
}

/// One entry, or what is wrong with it (in words that quote nothing of it).
fn parse_one(entry: &str) -> Result<BrokerAddress, String> {
    let url = url::Url::parse(entry).map_err(|e| format!("is not a valid URL ({e})"))?;
    let default_port = match url.scheme() {
        "amqp" => 5672,
        "amqps" => 5671,
        other => return Err(format!("has the scheme {other:?}, not amqp or amqps")),
    };
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or("names no host")?;
    Ok(BrokerAddress {
        shown: redact(entry),
        host: host.to_string(),
        port: url.port().unwrap_or(default_port),
        url: entry.into(),
    })
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_list_in_any_separator_keeps_its_order() {
        for sep in [",", " ", ";", " , ", "\n", ";\t"] {
            let text = format!("amqp://u:p1@h1/%2f{sep}amqps://u:p2@h2/vh{sep}amqp://[::1]:5673");
            let list = BrokerAddresses::parse(&text).unwrap();
            let found: Vec<_> = list.iter().map(|a| (a.host(), a.port())).collect();
            assert_eq!(found, [("h1", 5672), ("h2", 5671), ("[::1]", 5673)], "{text:?}");
            assert_eq!(list.first().url().expose_secret(), "amqp://u:p1@h1/%2f");
            assert_eq!(list.to_string(), "amqp://***@h1/%2f, amqps://***@h2/vh, amqp://[::1]:5673");
        }
        let one = BrokerAddresses::parse(" amqp://guest:guest@127.0.0.1:5672/%2f ").unwrap();
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn debug_shows_no_password() {
        let list = BrokerAddresses::parse("amqp://u:hunter2@h1/%2f,amqp://u:hunter3@h2/%2f").unwrap();
        let shown = format!("{list:?} {:?}", list.first());
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("h1") && shown.contains("h2"), "{shown}");
    }

    #[test]
    fn bad_entries_are_refused_without_their_password() {
        assert_eq!(BrokerAddresses::parse(" ,; ").unwrap_err(), BrokerAddressError::Empty);
        let cases = [
            ("http://u:hunter2@mq", "the address (http://***@mq) has the scheme \"http\", not amqp or amqps"),
            (
                "amqp://u:hunter2@h1,amqp://u:hunter2@h2:99999",
                "address 2 of 2 (amqp://***@h2:99999) is not a valid URL",
            ),
            ("amqp://u:hunter2@[bad", "the address (amqp://***@[bad) is not a valid URL"),
            ("amqp://u:hunter2@/%2f", "the address (amqp://***@/%2f) "),
        ];
        for (text, want) in cases {
            let err = BrokerAddresses::parse(text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("%2C"), "says how to write a separator in a password: {err}");
        }
    }
}
