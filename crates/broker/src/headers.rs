//! The message headers xaas-sync sets and reads, and the broker's own
//! `x-death` record. Header values arrive in whatever AMQP type the sender
//! chose, so the readers accept every integer and string type.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Failed attempts so far (set by us on retry and park, never by the broker).
pub const ATTEMPT: &str = "x-attempt";
/// The delay tier a retry waits in; the `P.retry` headers exchange routes on
/// it. Not `x-…`: RabbitMQ's headers exchange ignores `x-` headers when
/// matching, so a binding on `x-retry-tier` would match every tier.
pub const RETRY_TIER: &str = "xaas-retry-tier";
/// The queue a retried or parked message came from.
pub const ORIGIN_QUEUE: &str = "x-origin-queue";
/// The error of the last failed attempt of a retried message.
pub const LAST_ERROR: &str = "x-last-error";
pub const PARKED_REASON: &str = "x-parked-reason";
pub const PARKED_ERROR: &str = "x-parked-error";
pub const PARKED_AT: &str = "x-parked-at";
/// Set when an operator replays a parked message.
pub const REPLAYED_AT: &str = "x-replayed-at";

/// Headers the broker owns. They are dropped when we republish a message, so
/// that RabbitMQ 3.x does not treat our republish as part of a dead-letter
/// cycle (and drop it) and stale delivery counts do not travel along.
const BROKER_OWNED: &[&str] = &[
    "x-death",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-first-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-last-death-exchange",
    "x-delivery-count",
    "x-acquired-count",
];

/// Error texts are cut to this many bytes before they go into a header.
const MAX_ERROR_BYTES: usize = 2048;

pub fn get_str(props: &BasicProperties, key: &str) -> Option<String> {
    value_str(props.headers().as_ref()?.inner().get(key)?)
}

pub fn get_u64(props: &BasicProperties, key: &str) -> Option<u64> {
    value_u64(props.headers().as_ref()?.inner().get(key)?)
}

fn value_str(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn value_u64(v: &AMQPValue) -> Option<u64> {
    let signed: i64 = match *v {
        AMQPValue::ShortShortInt(i) => i.into(),
        AMQPValue::ShortShortUInt(i) => i.into(),
        AMQPValue::ShortInt(i) => i.into(),
        AMQPValue::ShortUInt(i) => i.into(),
        AMQPValue::LongInt(i) => i.into(),
        AMQPValue::LongUInt(i) => i.into(),
        AMQPValue::LongLongInt(i) => i,
        AMQPValue::Timestamp(t) => return Some(t),
        _ => return None,
    };
    u64::try_from(signed).ok()
}

pub fn long_str(s: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.into()))
}

/// Cuts an error text to a size fit for a header, on a char boundary.
pub fn error_text(e: &str) -> String {
    if e.len() <= MAX_ERROR_BYTES {
        return e.to_owned();
    }
    let mut end = MAX_ERROR_BYTES;
    while !e.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &e[..end])
}

/// One entry of the broker's `x-death` header: the message was dead-lettered
/// `count` times from `queue` for `reason` (`rejected`, `expired`,
/// `delivery_limit`, `maxlen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    pub queue: String,
    pub reason: String,
    pub count: u64,
}

/// The `x-death` entries, newest first (as the broker orders them).
pub fn deaths(props: &BasicProperties) -> Vec<Death> {
    let Some(AMQPValue::FieldArray(entries)) = props.headers().as_ref().and_then(|h| h.inner().get("x-death")) else {
        return Vec::new();
    };
    entries
        .as_slice()
        .iter()
        .filter_map(|e| match e {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        })
        .map(|t| {
            let s = |k: &str| t.inner().get(k).and_then(value_str).unwrap_or_default();
            Death {
                queue: s("queue"),
                reason: s("reason"),
                count: t.inner().get("count").and_then(value_u64).unwrap_or(0),
            }
        })
        .collect()
}

/// A copy of `props` for republishing: broker-owned headers and the `drop`
/// ones removed, `set` added (replacing same-named ones), persistent.
pub fn republish_props(
    props: &BasicProperties,
    keep_broker_owned: bool,
    drop: &[&str],
    set: Vec<(&str, AMQPValue)>,
) -> BasicProperties {
    let mut table = FieldTable::default();
    if let Some(h) = props.headers() {
        for (k, v) in h.inner() {
            let k_str = k.as_str();
            let owned = BROKER_OWNED.contains(&k_str);
            if (owned && !keep_broker_owned) || drop.contains(&k_str) {
                continue;
            }
            table.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in set {
        table.insert(ShortString::from(k), v);
    }
    props.clone().with_headers(table).with_delivery_mode(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    fn props_with(entries: Vec<(&str, AMQPValue)>) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert(k.into(), v);
        }
        BasicProperties::default().with_headers(t)
    }

    #[test]
    fn integers_of_any_width_are_read() {
        let p = props_with(vec![
            ("a", AMQPValue::LongInt(3)),
            ("b", AMQPValue::LongLongInt(4)),
            ("c", AMQPValue::ShortShortUInt(5)),
            ("neg", AMQPValue::LongInt(-1)),
            ("s", long_str("x")),
        ]);
        assert_eq!(get_u64(&p, "a"), Some(3));
        assert_eq!(get_u64(&p, "b"), Some(4));
        assert_eq!(get_u64(&p, "c"), Some(5));
        assert_eq!(get_u64(&p, "neg"), None);
        assert_eq!(get_u64(&p, "s"), None);
        assert_eq!(get_str(&p, "s").as_deref(), Some("x"));
        assert_eq!(get_str(&BasicProperties::default(), "s"), None);
    }

    #[test]
    fn x_death_is_parsed_newest_first() {
        let entry = |q: &str, r: &str, n: i64| {
            let mut t = FieldTable::default();
            t.insert("queue".into(), long_str(q));
            t.insert("reason".into(), long_str(r));
            t.insert("count".into(), AMQPValue::LongLongInt(n));
            AMQPValue::FieldTable(t)
        };
        let p = props_with(vec![(
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![
                entry("q.retry", "expired", 2),
                entry("q", "delivery_limit", 1),
            ])),
        )]);
        let d = deaths(&p);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0], Death { queue: "q.retry".into(), reason: "expired".into(), count: 2 });
        assert_eq!(d[1].reason, "delivery_limit");
    }

    #[test]
    fn republishing_drops_broker_headers_and_sets_ours() {
        let p = props_with(vec![
            ("x-death", AMQPValue::FieldArray(FieldArray::default())),
            ("x-delivery-count", AMQPValue::LongInt(2)),
            (ATTEMPT, AMQPValue::LongLongInt(1)),
            ("custom", long_str("kept")),
        ]);
        let out = republish_props(&p, false, &[], vec![(ATTEMPT, AMQPValue::LongLongInt(2))]);
        let h = out.headers().as_ref().unwrap().inner();
        assert!(!h.contains_key("x-death"));
        assert!(!h.contains_key("x-delivery-count"));
        assert_eq!(get_u64(&out, ATTEMPT), Some(2));
        assert_eq!(get_str(&out, "custom").as_deref(), Some("kept"));
        assert_eq!(*out.delivery_mode(), Some(2));
        let kept = republish_props(&p, true, &[ATTEMPT], vec![]);
        assert!(kept.headers().as_ref().unwrap().inner().contains_key("x-death"));
        assert_eq!(get_u64(&kept, ATTEMPT), None);
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = error_text(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES + "…".len());
        assert_eq!(error_text("short"), "short");
    }
}
