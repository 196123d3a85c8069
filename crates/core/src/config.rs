//! `xaas.toml`: the broker and the configured syncs, parsed once into domain
//! types so that the rest of the product never meets a raw setting.
//!
//! Three sources, later ones winning:
//! 1. the TOML file;
//! 2. environment overrides for any setting the file can hold: the setting's
//!    path, upper-cased, `.` → `__`, `-` → `_`, behind `XAAS__`:
//!    `XAAS__BROKER__PREFIX`, `XAAS__SYNCS__DEMO__SOURCE__PAGE_SIZE=500`.
//!    A value is read as a TOML value when it parses as one (`500`, `true`,
//!    `["1s", "5s"]`), else as a plain string; list settings also take a
//!    comma-separated string. Overrides reach the syncs the file declares
//!    and, in `mapping.attributes` and `filter`, the keys that already exist
//!    (the default attribute table counts); they cannot create new ones.
//!    `AMQP_URL` overrides `broker.url` too (`XAAS__BROKER__URL` beats it);
//!    either may list several brokers (see `broker_address`);
//! 3. secrets, which come only from environment variables or files, never
//!    from the TOML: each secret has a `*_env` setting naming the variable
//!    (with a default per sync) or a `*_file` setting naming a file.
//!
//! Parsing reads no secret: each is kept as a [`SecretRef`] (which variable
//! or file holds it), and the roles that use it resolve it at start. So the
//! commands that speak only to the broker need no secret, and a worker still
//! fails at start, naming the setting, when a secret of its role is missing.
//!
//! Core does no I/O: the caller passes the environment lookup and, to
//! resolve `*_file` secrets, the file reader.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::alerts::{AlertFormat, AlertKind, AlertsConfig};
use crate::broker_address::BrokerAddresses;
use crate::ids::SyncName;
use crate::limits::Limits;
use crate::mapping::{Filter, Mapping, MappingRules, RuleError};
use crate::messages::Mode;
use crate::odata::{self, FilterError};
use crate::reconcile::Guards;
use crate::redact::redact;
use crate::secret::{SecretKind, SecretRef};
use crate::upload::RetryBudget;

/// Looks up one environment variable.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;
/// Reads one secret file, e.g. `&|p| std::fs::read_to_string(p)`.
pub type FileReader<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

/// A configuration that cannot be used. Always permanent: retrying does not
/// help, fixing the named setting does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the configuration is not valid TOML: {0}")]
    Syntax(String),
    #[error("{setting}: {problem}")]
    Invalid { setting: String, problem: String },
    #[error("no sync named {name:?} is configured; configured syncs: {configured}")]
    UnknownSync { name: String, configured: String },
}

impl ConfigError {
    /// The setting at fault, when there is one.
    pub fn setting(&self) -> Option<&str> {
        match self {
            Self::Invalid { setting, .. } => Some(setting),
            _ => None,
        }
    }
}

fn invalid(setting: impl Into<String>, problem: impl Display) -> ConfigError {
    ConfigError::Invalid { setting: setting.into(), problem: problem.to_string() }
}

type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The whole product configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub broker: BrokerConfig,
    syncs: BTreeMap<SyncName, SyncConfig>,
}

/// `[broker]`: RabbitMQ.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `broker.url`: one or more `amqp://user:password@host:port/vhost`,
    /// tried in order. They carry passwords and show only redacted.
    pub addresses: BrokerAddresses,
    /// Prefix of every exchange and queue name (`xaas` → `xaas.pages`).
    pub prefix: String,
    /// Delays of the retry queues, shortest first.
    pub retry_tiers: Vec<Duration>,
    /// Deliveries of one message before it is parked.
    pub max_attempts: u32,
    /// How long a command waits for a broker at start before it gives up.
    pub connect_timeout: Duration,
}

/// `[syncs.<name>]`: one source → one Okta identity source.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub name: SyncName,
    /// Cron expression, checked by the scheduler that uses it.
    pub schedule: Option<String>,
    /// What the scheduler's runs do (`schedule_mode`, default full).
    pub schedule_mode: Mode,
    pub source: SourceConfig,
    /// `[syncs.<name>.mapping]` and `[syncs.<name>.filter]`.
    pub rules: MappingRules,
    pub target: TargetConfig,
    pub limits: Limits,
    /// `[syncs.<name>.guards]`: how much one run may deactivate.
    pub guards: Guards,
    /// `[syncs.<name>.retry]`: how long a failing Okta call is retried
    /// before its run fails.
    pub retry: RetryBudget,
    /// `[syncs.<name>.alerts]`: the sync's webhook, when it has one.
    pub alerts: Option<AlertsConfig>,
}

impl SyncConfig {
    /// The full path of one of this sync's settings, for error messages:
    /// `sync.setting("target.okta_url")` → `syncs.demo.target.okta_url`.
    pub fn setting(&self, key: &str) -> String {
        format!("syncs.{}.{key}", self.name)
    }
}

/// `[syncs.<name>.source]`: Microsoft Graph / Entra ID.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: SecretRef,
    /// Syntax-checked only; the Graph client applies the https policy.
    pub authority_url: String,
    pub graph_url: String,
    /// Plain http to a host other than loopback (a test network).
    pub allow_insecure_http: bool,
    /// Graph `$top`, 1..=999.
    pub page_size: u16,
    /// Graph `$select`; always holds `id` and every field the rules read.
    pub select: Vec<String>,
    /// Graph `$filter` for full runs.
    pub filter: Option<String>,
    /// `filter` as delta runs apply it to each record, since Graph's
    /// `/users/delta` takes no `$filter`; `Err` says why it cannot be, and
    /// the sync's delta runs fail with it.
    pub delta_filter: Option<Result<odata::Filter, FilterError>>,
}

/// `[syncs.<name>.target]`: the Okta identity source.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Syntax-checked only; the Okta client applies the https policy.
    pub okta_url: String,
    pub identity_source_id: String,
    pub auth: TargetAuth,
    /// Plain http to a host other than loopback (a test network).
    pub allow_insecure_http: bool,
}

/// How the Okta client authenticates (reference §3).
#[derive(Debug, Clone)]
pub enum TargetAuth {
    /// `Authorization: SSWS <token>`.
    ApiToken(SecretRef),
    /// OAuth 2.0 service app: client credentials with a `private_key_jwt`
    /// assertion signed by this key.
    ServiceApp { client_id: String, key_id: String, private_key: SecretRef },
}

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_PREFIX: &str = "xaas";
pub const DEFAULT_RETRY_TIERS: [Duration; 4] =
    [Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(30), Duration::from_secs(300)];
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Long enough for a broker that is still starting, short enough that a
/// wrong URL is reported promptly.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
pub const DEFAULT_AUTHORITY_URL: &str = "https://login.microsoftonline.com";
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";
/// Graph's maximum: fewer round trips; the mapper cuts pages to Okta's size anyway.
pub const DEFAULT_PAGE_SIZE: u16 = 999;
pub const MAX_PAGE_SIZE: u16 = 999;

impl Config {
    /// Parses `xaas.toml` with environment overrides. Secrets are not read:
    /// see [`SecretRef::resolve`].
    pub fn parse(toml_text: &str, env: EnvLookup<'_>) -> Result<Config> {
        let table: toml::Table = toml_text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))?;
        let mut root = Section::new(String::new(), table, env);
        let broker = parse_broker(root.section("broker")?, env)?;
        let syncs_section = root.section("syncs")?;
        root.finish()?;

        let mut syncs = BTreeMap::new();
        for (key, value) in syncs_section.table {
            let path = format!("syncs.{key}");
            let name = SyncName::parse(key.as_str())
                .map_err(|e| invalid(&path, format!("{e}; the sync name becomes part of queue names")))?;
            let toml::Value::Table(table) = value else {
                return Err(invalid(path, format!("expected a table [syncs.{key}], found {}", type_name(&value))));
            };
            let sync = parse_sync(name.clone(), Section::new(path, table, env))?;
            syncs.insert(name, sync);
        }
        one_sync_per_identity_source(&syncs)?;
        Ok(Config { broker, syncs })
    }

    /// The sync called `name`.
    pub fn sync(&self, name: &SyncName) -> Result<&SyncConfig> {
        self.syncs.get(name).ok_or_else(|| ConfigError::UnknownSync {
            name: name.to_string(),
            configured: if self.syncs.is_empty() {
                "none (add a [syncs.<name>] table to xaas.toml)".into()
            } else {
                self.syncs.keys().map(SyncName::as_str).collect::<Vec<_>>().join(", ")
            },
        })
    }

    /// Every configured sync, by name.
    pub fn syncs(&self) -> impl Iterator<Item = &SyncConfig> {
        self.syncs.values()
    }
}

/// Each sync keeps its own log of sessions and cooldown, so two syncs loading
/// into one identity source would load into each other's sessions and trigger
/// them mid-load. The later sync in name order is the one named at fault.
fn one_sync_per_identity_source(syncs: &BTreeMap<SyncName, SyncConfig>) -> Result<()> {
    let mut owners: BTreeMap<&str, &SyncName> = BTreeMap::new();
    for sync in syncs.values() {
        let id = sync.target.identity_source_id.as_str();
        if let Some(first) = owners.insert(id, &sync.name) {
            return Err(invalid(
                sync.setting("target.identity_source_id"),
                format!(
                    "the identity source {id} is already synced by syncs.{first}; two syncs loading into one \
                     identity source would share its sessions and cooldown"
                ),
            ));
        }
    }
    Ok(())
}

fn parse_broker(mut sec: Section<'_>, env: EnvLookup<'_>) -> Result<BrokerConfig> {
    // XAAS__BROKER__URL, then AMQP_URL (the name tests and tools share), then the file.
    let url = match (sec.take("url"), env("AMQP_URL")) {
        (Some(s), _) if s.from_env.is_some() => s,
        (_, Some(raw)) => Setting::env("broker.url".into(), "AMQP_URL".into(), raw),
        (Some(s), None) => s,
        (None, None) => Setting::file("broker.url".into(), toml::Value::String(DEFAULT_AMQP_URL.into())),
    };
    let addresses = BrokerAddresses::parse(&url.string()?).map_err(|e| url.invalid(e))?;
    let prefix = match sec.take("prefix") {
        Some(s) => queue_prefix(&s)?,
        None => DEFAULT_PREFIX.into(),
    };
    let retry_tiers = match sec.take("retry_tiers") {
        Some(s) => {
            let tiers = s.strings()?.iter().map(|t| s.duration_from(t)).collect::<Result<Vec<_>>>()?;
            if tiers.is_empty() {
                return Err(s.invalid("needs at least one delay, like [\"1s\", \"5s\", \"30s\", \"5m\"]"));
            }
            if tiers.contains(&Duration::ZERO) {
                return Err(s.invalid("a retry delay of 0 would retry in a tight loop; use at least 1s"));
            }
            tiers
        }
        None => DEFAULT_RETRY_TIERS.to_vec(),
    };
    let max_attempts = match sec.take("max_attempts") {
        Some(s) => s.int_in(1, u32::MAX.into())? as u32,
        None => DEFAULT_MAX_ATTEMPTS,
    };
    let connect_timeout = match sec.take("connect_timeout") {
        Some(s) => match s.duration()? {
            Duration::ZERO => return Err(s.invalid("must be longer than 0s, like \"20s\"")),
            d => d,
        },
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    sec.finish()?;
    Ok(BrokerConfig { addresses, prefix, retry_tiers, max_attempts, connect_timeout })
}

fn queue_prefix(s: &Setting) -> Result<String> {
    let prefix = s.string()?;
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
    if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(ok) {
        return Err(s.invalid(format!(
            "{prefix:?} cannot prefix queue names; use 1 to 64 lowercase letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(prefix)
}

fn parse_sync(name: SyncName, mut sec: Section<'_>) -> Result<SyncConfig> {
    let schedule = match sec.take("schedule") {
        Some(s) => Some(non_empty(&s, "a cron expression like \"0 9 17 * *\"")?),
        None => None,
    };
    let schedule_mode = match sec.take("schedule_mode") {
        Some(s) => match s.string()?.as_str() {
            "full" => Mode::Full,
            "delta" => Mode::Delta,
            "deactivate" => Mode::Deactivate,
            other => {
                return Err(s.invalid(format!("{other:?} is not a mode; use \"full\", \"delta\" or \"deactivate\"")));
            }
        },
        None => Mode::Full,
    };
    let source = sec.section("source")?;
    let mapping = sec.section("mapping")?;
    let filter = sec.section("filter")?;
    let target = sec.section("target")?;
    let limits = sec.section("limits")?;
    let guards = sec.section("guards")?;
    let retry = sec.section("retry")?;
    // Present, even empty, means the sync has a webhook.
    let has_alerts = sec.table.contains_key("alerts");
    let alerts = Some(sec.section("alerts")?).filter(|_| has_alerts);
    sec.finish()?;

    let rules = parse_rules(&name, mapping, filter)?;
    Ok(SyncConfig {
        source: parse_source(&name, source, &rules)?,
        target: parse_target(&name, target)?,
        limits: parse_limits(limits)?,
        guards: parse_guards(guards)?,
        retry: parse_retry(retry)?,
        alerts: alerts.map(|a| parse_alerts(&name, a)).transpose()?,
        rules,
        schedule,
        schedule_mode,
        name,
    })
}

/// `max_deactivations` (a count, or `"none"`) and
/// `max_deactivations_percent` (0 to 100, or `"none"`).
fn parse_guards(mut sec: Section<'_>) -> Result<Guards> {
    let defaults = Guards::DEFAULT;
    let none = |s: &Setting| matches!(&s.value, toml::Value::String(v) if v == "none");
    let max_deactivations = match sec.take("max_deactivations") {
        Some(s) if none(&s) => None,
        Some(s) => Some(s.int_in(0, i64::MAX)?.unsigned_abs()),
        None => defaults.max_deactivations,
    };
    let max_deactivations_percent = match sec.take("max_deactivations_percent") {
        Some(s) if none(&s) => None,
        Some(s) => {
            let p = s.number()?;
            if !(0.0..=100.0).contains(&p) {
                return Err(s.invalid(format!("{p} is not a percentage; expected 0 to 100, or \"none\"")));
            }
            Some(p)
        }
        None => defaults.max_deactivations_percent,
    };
    sec.finish()?;
    Ok(Guards { max_deactivations, max_deactivations_percent })
}

/// `attempts` (at least 1) and `within` (a duration, at least 1 s).
fn parse_retry(mut sec: Section<'_>) -> Result<RetryBudget> {
    let defaults = RetryBudget::DEFAULT;
    let attempts = match sec.take("attempts") {
        Some(s) => u32::try_from(s.int_in(1, 1000)?).unwrap_or(defaults.attempts),
        None => defaults.attempts,
    };
    let within = match sec.take("within") {
        Some(s) => {
            let d = s.duration()?;
            if d < Duration::from_secs(1) {
                return Err(s.invalid(format!("{} is too short; give at least 1s", humantime::format_duration(d))));
            }
            d
        }
        None => defaults.within,
    };
    sec.finish()?;
    Ok(RetryBudget { attempts, within })
}

/// `[syncs.<name>.alerts]`: where the webhook URL is read from, the body
/// format and which events alert. The URL itself is checked by the role that
/// reads it (`alerts::webhook_url`).
fn parse_alerts(name: &SyncName, mut sec: Section<'_>) -> Result<AlertsConfig> {
    let webhook = secret(
        &mut sec,
        SecretKind::AlertWebhook,
        ("webhook_url_env", "webhook_url_file"),
        default_secret_var(name, "ALERT_WEBHOOK"),
    )?;
    let format = match sec.take("format") {
        Some(s) => match s.string()?.as_str() {
            "json" => AlertFormat::Json,
            "slack" => AlertFormat::Slack,
            other => {
                return Err(s.invalid(format!(
                    "{other:?} is not an alert format; use \"json\" (a generic JSON body) or \"slack\" \
                     (a Slack incoming-webhook body)"
                )));
            }
        },
        None => AlertFormat::Json,
    };
    let names = || AlertKind::ALL.map(AlertKind::as_str).join(", ");
    let events = match sec.take("events") {
        Some(s) => {
            let list = s.strings()?;
            if list.is_empty() {
                return Err(s.invalid(format!("is empty; list some of {}, or remove the alerts table", names())));
            }
            list.iter()
                .map(|e| {
                    AlertKind::parse(e).ok_or_else(|| s.invalid(format!("{e:?} is not an alert; use {}", names())))
                })
                .collect::<Result<_>>()?
        }
        None => AlertKind::ALL.into_iter().collect(),
    };
    let allow_insecure_http = sec.take("allow_insecure_http").map(|s| s.bool()).transpose()?.unwrap_or(false);
    sec.finish()?;
    Ok(AlertsConfig { webhook, format, events, allow_insecure_http })
}

fn parse_rules(name: &SyncName, mut mapping: Section<'_>, filter: Section<'_>) -> Result<MappingRules> {
    let external_id = match mapping.take("external_id") {
        Some(s) => s.string()?,
        None => crate::mapping::DEFAULT_EXTERNAL_ID_FIELD.into(),
    };
    let attributes = mapping.section_or("attributes", Mapping::original_workflow_attributes())?;
    mapping.finish()?;
    let attributes = attributes.entries().iter().map(|(k, s)| Ok((k.clone(), s.string()?))).collect::<Result<_>>()?;
    let mapping = Mapping::new(&external_id, attributes).map_err(rule_error_at(format!("syncs.{name}.mapping")))?;

    let equals = filter
        .entries()
        .iter()
        .map(|(k, s)| {
            let value = match &s.value {
                toml::Value::Boolean(b) => Value::Bool(*b),
                _ => Value::String(s.string()?),
            };
            Ok((k.clone(), value))
        })
        .collect::<Result<_>>()?;
    let filter = Filter::new(equals).map_err(rule_error_at(format!("syncs.{name}.filter")))?;
    Ok(MappingRules { mapping, filter })
}

/// A mapping/filter error, with its key placed under `section`.
fn rule_error_at(section: String) -> impl FnOnce(RuleError) -> ConfigError {
    move |e| invalid(format!("{section}.{}", e.key), e.problem)
}

fn parse_source(name: &SyncName, mut sec: Section<'_>, rules: &MappingRules) -> Result<SourceConfig> {
    let tenant =
        sec.required("tenant", "set the Entra tenant id (a GUID, or a domain like contoso.onmicrosoft.com)")?;
    let tenant_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if !tenant.value.chars().all(tenant_ok) {
        return Err(tenant.setting.invalid(format!(
            "{:?} is not a tenant id; use the tenant's GUID or its domain (letters, digits, '-' and '.')",
            tenant.value
        )));
    }
    let client_id = sec.required("client_id", "set the application (client) id of the Entra app registration")?;
    let client_secret = secret(
        &mut sec,
        SecretKind::GraphClientSecret,
        ("client_secret_env", "client_secret_file"),
        default_secret_var(name, "GRAPH_CLIENT_SECRET"),
    )?;
    let authority_url = optional_url(&mut sec, "authority_url", DEFAULT_AUTHORITY_URL)?;
    let graph_url = optional_url(&mut sec, "graph_url", DEFAULT_GRAPH_URL)?;
    let allow_insecure_http = sec.take("allow_insecure_http").map(|s| s.bool()).transpose()?.unwrap_or(false);
    let page_size = match sec.take("page_size") {
        Some(s) => match s.int()? {
            n if n < 1 => return Err(s.invalid(format!("{n} is below Graph's minimum of 1"))),
            n if n > i64::from(MAX_PAGE_SIZE) => {
                return Err(s.invalid(format!("{n} is above Graph's maximum of {MAX_PAGE_SIZE}")));
            }
            n => n as u16,
        },
        None => DEFAULT_PAGE_SIZE,
    };
    let filter = match sec.take("filter") {
        Some(s) => Some(non_empty(&s, "a Graph $filter like \"accountEnabled eq true\"")?),
        None => None,
    };
    let delta_filter = filter.as_deref().map(odata::Filter::parse);
    let filtered: Vec<&str> = match &delta_filter {
        Some(Ok(f)) => f.properties(),
        _ => Vec::new(),
    };
    // A delta record holds only the selected properties, so the filter's
    // must be selected for a delta run to apply it.
    let needed: Vec<&str> = ["id"].into_iter().chain(rules.graph_fields()).chain(filtered).collect();
    let select = match sec.take("select") {
        Some(s) => {
            let select = s.strings()?;
            if let Some(missing) = needed.iter().find(|f| !select.iter().any(|s| s.eq_ignore_ascii_case(f))) {
                return Err(s.invalid(format!(
                    "does not include {missing:?}, which the sync reads (id, the mapping and the filters); \
                     add it, or remove select to use the default"
                )));
            }
            select
        }
        None => {
            let mut select: Vec<String> = vec!["id".into(), "accountEnabled".into()];
            for field in needed {
                if !select.iter().any(|s| s.eq_ignore_ascii_case(field)) {
                    select.push(field.into());
                }
            }
            select
        }
    };
    sec.finish()?;
    Ok(SourceConfig {
        tenant: tenant.value,
        client_id: client_id.value,
        client_secret,
        authority_url,
        graph_url,
        allow_insecure_http,
        page_size,
        select,
        filter,
        delta_filter,
    })
}

fn parse_target(name: &SyncName, mut sec: Section<'_>) -> Result<TargetConfig> {
    let okta_url = sec.required("okta_url", "set your Okta org URL, like https://acme.okta.com")?;
    http_url(&okta_url.setting)?;
    let id = sec.required(
        "identity_source_id",
        "set the id (0oa…) of the Custom Identity Source app, from its URL in the Okta Admin Console",
    )?;
    if id.value.len() > 64 || !id.value.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(id.setting.invalid(format!("{:?} is not an Okta id (letters and digits, like 0oa…)", id.value)));
    }
    let allow_insecure_http = sec.take("allow_insecure_http").map(|s| s.bool()).transpose()?.unwrap_or(false);
    const API_TOKEN_KEYS: [&str; 2] = ["token_env", "token_file"];
    const SERVICE_APP_KEYS: [&str; 4] = ["client_id", "key_id", "private_key_env", "private_key_file"];
    let method = match sec.take("auth") {
        Some(s) => s,
        None => Setting::file(sec.path("auth"), toml::Value::String("api_token".into())),
    };
    let auth = match method.string()?.as_str() {
        "api_token" => {
            sec.forbid(&SERVICE_APP_KEYS, "auth = \"service_app\"")?;
            let token = secret(
                &mut sec,
                SecretKind::OktaApiToken,
                ("token_env", "token_file"),
                default_secret_var(name, "OKTA_TOKEN"),
            )?;
            TargetAuth::ApiToken(token)
        }
        "service_app" => {
            sec.forbid(&API_TOKEN_KEYS, "auth = \"api_token\"")?;
            let client_id = sec.required("client_id", "set the client id of the Okta API Services app")?;
            let key_id = sec.required("key_id", "set the kid of the public key registered on the Okta service app")?;
            let private_key = secret(
                &mut sec,
                SecretKind::OktaPrivateKey,
                ("private_key_env", "private_key_file"),
                default_secret_var(name, "OKTA_PRIVATE_KEY"),
            )?;
            TargetAuth::ServiceApp { client_id: client_id.value, key_id: key_id.value, private_key }
        }
        other => {
            return Err(
                method.invalid(format!("{other:?} is not an auth method; use \"api_token\" or \"service_app\""))
            );
        }
    };
    sec.finish()?;
    Ok(TargetConfig { okta_url: okta_url.value, identity_source_id: id.value, auth, allow_insecure_http })
}

fn parse_limits(mut sec: Section<'_>) -> Result<Limits> {
    let okta = Limits::OKTA;
    let count = |s: Setting| -> Result<usize> { Ok(usize::try_from(s.int_in(0, i64::MAX)?).unwrap_or(usize::MAX)) };
    let profiles_per_request = match sec.take("profiles_per_request") {
        Some(s) => count(s)?,
        None => okta.profiles_per_request,
    };
    let bytes_per_request = match sec.take("bytes_per_request") {
        Some(s) => count(s)?,
        None => okta.bytes_per_request,
    };
    let requests_per_session = match sec.take("requests_per_session") {
        Some(s) => s.int_in(0, u32::MAX.into())? as u32,
        None => okta.requests_per_session,
    };
    let cooldown = match sec.take("cooldown") {
        Some(s) => s.duration()?,
        None => okta.cooldown,
    };
    let base = sec.path.clone();
    sec.finish()?;
    Limits::lowered(Limits { profiles_per_request, bytes_per_request, requests_per_session, cooldown })
        .map_err(|e| invalid(format!("{base}.{}", e.field()), e))
}

/// `XAAS_SYNC_<NAME>_<WHAT>`, the sync name upper-cased with '-' → '_'.
fn default_secret_var(name: &SyncName, what: &str) -> String {
    format!("XAAS_SYNC_{}_{what}", name.as_str().to_ascii_uppercase().replace('-', "_"))
}

/// Where one secret is read from: the variable named by `keys.0` (default
/// `default_var`) or the file named by `keys.1`. Nothing is read yet.
fn secret(
    sec: &mut Section<'_>,
    kind: SecretKind,
    keys: (&'static str, &'static str),
    default_var: String,
) -> Result<SecretRef> {
    let (env_key, file_key) = keys;
    let var = sec.take(env_key);
    match (var, sec.take(file_key)) {
        (Some(_), Some(file)) => Err(file.invalid(format!("set either {env_key} or {file_key}, not both"))),
        (None, Some(file)) => {
            let path = file.string()?;
            if path.is_empty() {
                return Err(file.invalid("is empty; name the file that holds the secret"));
            }
            Ok(SecretRef::file(kind, path.into(), file.path.clone(), file.override_var()))
        }
        (var, None) => {
            let setting = match var {
                Some(s) => s,
                None => Setting::file(sec.path(env_key), toml::Value::String(default_var)),
            };
            let name = setting.string()?;
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(setting.invalid(format!("{name:?} is not an environment variable name")));
            }
            Ok(SecretRef::env(kind, name, setting.path.clone(), file_key, setting.override_var()))
        }
    }
}

fn optional_url(sec: &mut Section<'_>, key: &'static str, default: &str) -> Result<String> {
    match sec.take(key) {
        Some(s) => http_url(&s),
        None => Ok(default.into()),
    }
}

/// Checks URL syntax only: which schemes and hosts may be called is the
/// clients' policy (`xaas_http::parse_base_url`), applied with the setting
/// name. Credentials have no place in these URLs (Graph and Okta take
/// tokens), so none is kept in the configuration where a print could show it.
fn http_url(s: &Setting) -> Result<String> {
    let raw = s.string()?;
    let shown = redact(&raw);
    let url = url::Url::parse(&raw).map_err(|e| s.invalid(format!("{shown:?} is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(s.invalid(format!("{shown:?} must be an https:// URL (or http:// to a test server)")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(s.invalid(format!(
            "{shown:?} holds a user name or password; remove them (credentials are set by their own settings)"
        )));
    }
    Ok(raw)
}

fn non_empty(s: &Setting, expected: &str) -> Result<String> {
    let value = s.string()?;
    if value.trim().is_empty() {
        return Err(s.invalid(format!("is empty; expected {expected}, or remove the setting")));
    }
    Ok(value)
}

/// The name of the variable that overrides `path`.
fn override_var(path: &str) -> String {
    let mut var = String::from("XAAS");
    for segment in path.split('.') {
        var.push_str("__");
        var.push_str(&segment.to_ascii_uppercase().replace('-', "_"));
    }
    var
}

fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// One setting's value and where it came from, so that every error can name
/// the setting and, for overrides, the variable that set it.
struct Setting {
    path: String,
    value: toml::Value,
    /// `(variable, raw value)` when an environment override set it.
    from_env: Option<(String, String)>,
}

impl Setting {
    fn file(path: String, value: toml::Value) -> Self {
        Self { path, value, from_env: None }
    }

    fn env(path: String, var: String, raw: String) -> Self {
        // `v = <raw>` parses only when raw is one TOML value; anything else
        // (including text that would smuggle in more keys) stays a string.
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .filter(|t| t.len() == 1)
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        Self { path, value, from_env: Some((var, raw)) }
    }

    /// The environment variable that set this setting, if one did.
    fn override_var(&self) -> Option<String> {
        self.from_env.as_ref().map(|(var, _)| var.clone())
    }

    fn invalid(&self, problem: impl Display) -> ConfigError {
        match &self.from_env {
            Some((var, _)) => invalid(&self.path, format!("{problem} (set by environment variable {var})")),
            None => invalid(&self.path, problem),
        }
    }

    fn expected(&self, what: &str) -> ConfigError {
        self.invalid(format!("expected {what}, found {}", type_name(&self.value)))
    }

    /// A string; an override is taken verbatim, whatever it looks like
    /// (`client_id=12345` is the string "12345").
    fn string(&self) -> Result<String> {
        match (&self.value, &self.from_env) {
            (_, Some((_, raw))) => Ok(raw.clone()),
            (toml::Value::String(s), None) => Ok(s.clone()),
            _ => Err(self.expected("a string")),
        }
    }

    fn int(&self) -> Result<i64> {
        match self.value {
            toml::Value::Integer(n) => Ok(n),
            _ => Err(self.expected("an integer")),
        }
    }

    fn number(&self) -> Result<f64> {
        match self.value {
            toml::Value::Integer(n) => Ok(n as f64),
            toml::Value::Float(f) if f.is_finite() => Ok(f),
            _ => Err(self.expected("a number")),
        }
    }

    fn int_in(&self, min: i64, max: i64) -> Result<i64> {
        let n = self.int()?;
        if n < min || n > max {
            return Err(self.invalid(format!("{n} is out of range; expected {min} to {max}")));
        }
        Ok(n)
    }

    fn bool(&self) -> Result<bool> {
        match self.value {
            toml::Value::Boolean(b) => Ok(b),
            _ => Err(self.expected("true or false")),
        }
    }

    fn duration(&self) -> Result<Duration> {
        match &self.value {
            toml::Value::String(s) => self.duration_from(s),
            _ => Err(self.expected("a duration like \"5s\" or \"5m\"")),
        }
    }

    fn duration_from(&self, text: &str) -> Result<Duration> {
        humantime::parse_duration(text)
            .map_err(|e| self.invalid(format!("{text:?} is not a duration like \"5s\" or \"5m\": {e}")))
    }

    /// An array of strings; an override may also be `a,b,c`.
    fn strings(&self) -> Result<Vec<String>> {
        match (&self.value, &self.from_env) {
            (toml::Value::Array(items), _) => items
                .iter()
                .map(|item| item.as_str().map(str::to_string).ok_or_else(|| self.expected("an array of strings")))
                .collect(),
            (_, Some((_, raw))) => {
                Ok(raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            }
            _ => Err(self.expected("an array of strings")),
        }
    }
}

/// A setting that must be present, with its value.
struct Required {
    setting: Setting,
    value: String,
}

/// One TOML table being read. Keys are taken out as they are read, so what
/// is left at [`Section::finish`] is unknown and reported.
struct Section<'a> {
    path: String,
    table: toml::Table,
    known: Vec<&'static str>,
    env: EnvLookup<'a>,
}

impl<'a> Section<'a> {
    fn new(path: String, table: toml::Table, env: EnvLookup<'a>) -> Self {
        Self { path, table, known: Vec::new(), env }
    }

    fn path(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    /// The value of `key`: its environment override, else the file's.
    fn take(&mut self, key: &'static str) -> Option<Setting> {
        self.known.push(key);
        let path = self.path(key);
        let from_file = self.table.remove(key);
        let var = override_var(&path);
        match (self.env)(&var) {
            Some(raw) => Some(Setting::env(path, var, raw)),
            None => from_file.map(|value| Setting::file(path, value)),
        }
    }

    fn required(&mut self, key: &'static str, hint: &str) -> Result<Required> {
        let setting = self.take(key).ok_or_else(|| invalid(self.path(key), format!("missing; {hint}")))?;
        let value = setting.string()?;
        if value.is_empty() {
            return Err(setting.invalid(format!("is empty; {hint}")));
        }
        Ok(Required { setting, value })
    }

    /// Refuses settings that belong to another mode.
    fn forbid(&mut self, keys: &[&'static str], only_with: &str) -> Result<()> {
        for key in keys {
            if let Some(s) = self.take(key) {
                return Err(s.invalid(format!("is only used with {only_with}")));
            }
        }
        Ok(())
    }

    /// The sub-table `key`, empty when absent.
    fn section(&mut self, key: &'static str) -> Result<Section<'a>> {
        self.section_or(key, BTreeMap::new())
    }

    /// The sub-table `key`, or one holding `default` when absent.
    fn section_or(&mut self, key: &'static str, default: BTreeMap<String, String>) -> Result<Section<'a>> {
        self.known.push(key);
        let path = self.path(key);
        let table = match self.table.remove(key) {
            None => default.into_iter().map(|(k, v)| (k, toml::Value::String(v))).collect(),
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                return Err(invalid(&path, format!("expected a table [{path}], found {}", type_name(&other))));
            }
        };
        Ok(Section::new(path, table, self.env))
    }

    /// For tables whose keys are data (attribute names, filter fields): each
    /// entry with its environment override.
    fn entries(&self) -> Vec<(String, Setting)> {
        self.table
            .iter()
            .map(|(key, value)| {
                let path = self.path(key);
                let var = override_var(&path);
                let setting = match (self.env)(&var) {
                    Some(raw) => Setting::env(path, var, raw),
                    None => Setting::file(path, value.clone()),
                };
                (key.clone(), setting)
            })
            .collect()
    }

    fn finish(self) -> Result<()> {
        match self.table.keys().next() {
            None => Ok(()),
            Some(key) => Err(invalid(
                self.path(key),
                format!("unknown setting; the settings here are: {}", self.known.join(", ")),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    const SECRETS: [(&str, &str); 2] =
        [("XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET", "sandbox-secret"), ("XAAS_SYNC_DEMO_OKTA_TOKEN", "sandbox-okta-token")];

    /// An environment holding `vars`.
    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.get(name).cloned()
    }

    fn with_secrets(extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars = [&SECRETS[..], extra].concat();
        env_of(&vars)
    }

    const MINIMAL: &str = r#"
        [syncs.demo.source]
        tenant = "contoso.onmicrosoft.com"
        client_id = "app-1"
        [syncs.demo.target]
        okta_url = "https://acme.okta.com"
        identity_source_id = "0oa1234567890abcdefg"
    "#;

    fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        Config::parse(text, env)
    }

    fn error(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
        parse(text, env).unwrap_err().to_string()
    }

    fn no_files(_: &Path) -> std::io::Result<String> {
        Err(std::io::ErrorKind::NotFound.into())
    }

    /// The secret `r` names, read from `env`.
    fn resolved(r: &SecretRef, env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
        r.resolve(env, &no_files).map(|s| s.expose_secret().to_string())
    }

    fn okta_secret(config: &Config) -> &SecretRef {
        match &demo(config).target.auth {
            TargetAuth::ApiToken(token) => token,
            TargetAuth::ServiceApp { private_key, .. } => private_key,
        }
    }

    fn demo(config: &Config) -> &SyncConfig {
        config.sync(&SyncName::parse("demo").unwrap()).unwrap()
    }

    /// MINIMAL with `extra` appended to the table `[table]`.
    fn minimal_with(table: &str, extra: &str) -> String {
        format!("{MINIMAL}\n[{table}]\n{extra}\n")
    }

    #[test]
    fn the_shipped_demo_config_parses() {
        let text = include_str!("../../../xaas.toml");
        let env = with_secrets(&[]);
        let config = parse(text, &env).unwrap();
        assert_eq!(config.broker.addresses.len(), 1);
        assert_eq!(config.broker.addresses.first().url().expose_secret(), DEFAULT_AMQP_URL);
        assert_eq!(config.broker.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.broker.prefix, "xaas");
        assert_eq!(config.broker.retry_tiers, DEFAULT_RETRY_TIERS);
        assert_eq!(config.broker.max_attempts, 8);

        let sync = demo(&config);
        assert_eq!(sync.schedule.as_deref(), Some("0 9 17 * *"));
        let src = &sync.source;
        assert_eq!((src.tenant.as_str(), src.client_id.as_str()), ("sandbox-tenant", "sandbox-client"));
        assert_eq!(resolved(&src.client_secret, &env).unwrap(), "sandbox-secret");
        assert_eq!(src.authority_url, "http://127.0.0.1:8080");
        assert_eq!(src.graph_url, "http://127.0.0.1:8080");
        assert_eq!(src.page_size, 999);
        assert_eq!(src.filter.as_deref(), Some("accountEnabled eq true"));
        assert_eq!(&src.select[..2], ["id", "accountEnabled"]);
        for field in ["userPrincipalName", "givenName", "surname", "mail", "department", "companyName"] {
            assert!(src.select.iter().any(|s| s == field), "{field} in {:?}", src.select);
        }
        assert_eq!(src.select.len(), 2 + 14, "id, accountEnabled and the 14 mapped fields: {:?}", src.select);

        assert_eq!(sync.rules.mapping, Mapping::original_workflow("id").unwrap());
        assert!(sync.rules.filter.matches(&serde_json::json!({"department": "Okta Workflows"})));
        assert!(!sync.rules.filter.matches(&serde_json::json!({"department": "Sales"})));

        let target = &sync.target;
        assert_eq!(target.okta_url, "http://127.0.0.1:8080");
        assert_eq!(target.identity_source_id, "0oasandbox00000000001");
        assert!(!target.allow_insecure_http);
        match &target.auth {
            TargetAuth::ApiToken(token) => assert_eq!(resolved(token, &env).unwrap(), "sandbox-okta-token"),
            other => panic!("expected an API token, got {other:?}"),
        }
        assert_eq!(sync.limits, Limits { cooldown: Duration::from_secs(5), ..Limits::OKTA });
        assert_eq!(config.syncs().count(), 1);
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let text = include_str!("../../../xaas.toml");
        let env = with_secrets(&[("AMQP_URL", "amqp://u:hunter2@h1/%2f, amqp://u:hunter3@h2/%2f")]);
        let config = parse(text, &env).unwrap();
        let resolved = okta_secret(&config).resolve(&env, &no_files).unwrap();
        let shown = format!("{config:?} {resolved:?}");
        for secret in ["sandbox-secret", "sandbox-okta-token", "hunter"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("amqp://***@h2/%2f"), "{shown}");
    }

    #[test]
    fn a_minimal_config_takes_the_defaults() {
        let config = parse(MINIMAL, &with_secrets(&[])).unwrap();
        assert_eq!(config.broker.addresses.first().url().expose_secret(), DEFAULT_AMQP_URL);
        let sync = demo(&config);
        assert_eq!(sync.schedule, None);
        assert_eq!(sync.source.authority_url, DEFAULT_AUTHORITY_URL);
        assert_eq!(sync.source.graph_url, DEFAULT_GRAPH_URL);
        assert_eq!(sync.source.filter, None);
        assert_eq!(sync.rules.filter, Filter::none());
        assert_eq!(sync.limits, Limits::OKTA);
        assert_eq!(sync.setting("target.okta_url"), "syncs.demo.target.okta_url");
    }

    #[test]
    fn secrets_are_read_only_when_resolved() {
        // The commands that speak only to the broker need no secret.
        let config = parse(MINIMAL, &env_of(&[])).unwrap();
        let env = env_of(&SECRETS[..1]);
        let err = resolved(okta_secret(&config), &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "syncs.demo.target.token_env: environment variable XAAS_SYNC_DEMO_OKTA_TOKEN is not set \
             (the Okta API token is read only from the environment, or from the file named by token_file)"
        );
        assert_eq!(resolved(&demo(&config).source.client_secret, &env).unwrap(), "sandbox-secret");
        let err = resolved(&demo(&config).source.client_secret, &env_of(&SECRETS[1..])).unwrap_err().to_string();
        assert!(err.starts_with("syncs.demo.source.client_secret_env: environment variable XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET is not set"), "{err}");
        assert_eq!(demo(&config).source.client_secret.setting(), "syncs.demo.source.client_secret_env");

        let text = MINIMAL.replace("[syncs.demo.target]", "[syncs.demo.target]\ntoken_env = \"MY_TOKEN\"");
        let config = parse(&text, &env_of(&[])).unwrap();
        let err = resolved(okta_secret(&config), &with_secrets(&[])).unwrap_err().to_string();
        assert!(err.contains("environment variable MY_TOKEN is not set"), "{err}");
        assert_eq!(resolved(okta_secret(&config), &env_of(&[("MY_TOKEN", "t0k")])).unwrap(), "t0k");
        let err = resolved(okta_secret(&config), &env_of(&[("MY_TOKEN", "")])).unwrap_err().to_string();
        assert!(err.contains("environment variable MY_TOKEN is empty"), "{err}");

        // A variable chosen by an override says so.
        let env = env_of(&[("XAAS__SYNCS__DEMO__TARGET__TOKEN_ENV", "OTHER_TOKEN")]);
        let err = resolved(okta_secret(&parse(MINIMAL, &env).unwrap()), &env).unwrap_err().to_string();
        assert!(err.ends_with("(set by environment variable XAAS__SYNCS__DEMO__TARGET__TOKEN_ENV)"), "{err}");
        let err = error(MINIMAL, &env_of(&[("XAAS__SYNCS__DEMO__TARGET__TOKEN_ENV", "A=B")]));
        assert!(err.starts_with("syncs.demo.target.token_env: \"A=B\" is not an environment variable name"), "{err}");
    }

    #[test]
    fn default_secret_variables_follow_the_sync_name() {
        let text = MINIMAL.replace("syncs.demo", "syncs.entra-main");
        let env =
            env_of(&[("XAAS_SYNC_ENTRA_MAIN_GRAPH_CLIENT_SECRET", "s"), ("XAAS_SYNC_ENTRA_MAIN_OKTA_TOKEN", "t")]);
        let config = parse(&text, &env).unwrap();
        let sync = config.sync(&SyncName::parse("entra-main").unwrap()).unwrap();
        assert_eq!(resolved(&sync.source.client_secret, &env).unwrap(), "s");
    }

    #[test]
    fn errors_name_the_setting_and_what_to_do() {
        let cases = [
            (
                minimal_with("syncs.demo.limits", "profiles_per_request = 201"),
                "syncs.demo.limits.profiles_per_request: 201 is above Okta's limit of 200; limits can only be lowered",
            ),
            (
                MINIMAL.replace("client_id = \"app-1\"", "client_id = \"app-1\"\npage_size = 1000"),
                "syncs.demo.source.page_size: 1000 is above Graph's maximum of 999",
            ),
            (
                MINIMAL.replace("client_id = \"app-1\"", "client_id = \"app-1\"\npage_size = 0"),
                "syncs.demo.source.page_size: 0 is below Graph's minimum of 1",
            ),
            (
                MINIMAL.replace("client_id = \"app-1\"", "client_id = \"app-1\"\npage_size = \"big\""),
                "syncs.demo.source.page_size: expected an integer, found a string",
            ),
            (
                MINIMAL.replace("okta_url = \"https://acme.okta.com\"", "okta_url = \"acme.okta.com\""),
                "syncs.demo.target.okta_url: \"acme.okta.com\" is not a valid URL: relative URL without a base",
            ),
            (
                MINIMAL.replace("okta_url = \"https://acme.okta.com\"", ""),
                "syncs.demo.target.okta_url: missing; set your Okta org URL, like https://acme.okta.com",
            ),
            (
                MINIMAL.replace("0oa1234567890abcdefg", "0oa/../x"),
                "syncs.demo.target.identity_source_id: \"0oa/../x\" is not an Okta id (letters and digits, like 0oa…)",
            ),
            (
                MINIMAL.replace("[syncs.demo.target]", "[syncs.demo.target]\nauth = \"password\""),
                "syncs.demo.target.auth: \"password\" is not an auth method; use \"api_token\" or \"service_app\"",
            ),
            (
                minimal_with("syncs.demo.limits", "cooldown = \"soon\""),
                "syncs.demo.limits.cooldown: \"soon\" is not a duration like \"5s\" or \"5m\": expected number at 0",
            ),
            (
                format!("[broker]\nmax_attempts = 0\n{MINIMAL}"),
                "broker.max_attempts: 0 is out of range; expected 1 to 4294967295",
            ),
            (
                format!("[broker]\nprefix = \"Xaas Prod\"\n{MINIMAL}"),
                "broker.prefix: \"Xaas Prod\" cannot prefix queue names; use 1 to 64 lowercase letters, digits, '-', '_' or '.'",
            ),
            (
                format!("[broker]\nconnect_timeout = \"0s\"\n{MINIMAL}"),
                "broker.connect_timeout: must be longer than 0s, like \"20s\"",
            ),
            (
                MINIMAL.replace("[syncs.demo.source]", "[syncs.Demo.source]"),
                "syncs.Demo: sync name \"Demo\" may only contain lowercase letters, digits, '-' and '_'; the sync name becomes part of queue names",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(error(&text, &with_secrets(&[])), want);
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            error(&MINIMAL.replace("client_id = \"app-1\"", "client_id = \"app-1\"\npagesize = 5"), &with_secrets(&[]));
        assert!(
            err.starts_with("syncs.demo.source.pagesize: unknown setting; the settings here are: tenant, client_id,"),
            "{err}"
        );
        assert!(err.contains("page_size"), "{err}");
        let err = error(&format!("brokr = 1\n{MINIMAL}"), &with_secrets(&[]));
        assert_eq!(err, "brokr: unknown setting; the settings here are: broker, syncs");
        let err = error(&minimal_with("syncs.demo.limits", "requests = 5"), &with_secrets(&[]));
        assert!(err.starts_with("syncs.demo.limits.requests: unknown setting"), "{err}");
        let err = error(&minimal_with("syncs.demo", "shedule = \"x\""), &with_secrets(&[]));
        assert!(err.starts_with("syncs.demo.shedule: unknown setting"), "{err}");
        let err = error(&minimal_with("syncs.demo.mapping", "externalId = \"id\""), &with_secrets(&[]));
        assert!(err.starts_with("syncs.demo.mapping.externalId: unknown setting"), "{err}");
    }

    #[test]
    fn a_toml_syntax_error_is_reported() {
        let err = parse("[broker\nurl = 1", &with_secrets(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax(_)), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn environment_overrides_any_setting() {
        let env = with_secrets(&[
            ("XAAS__BROKER__PREFIX", "xaas-test"),
            ("XAAS__BROKER__RETRY_TIERS", "2s, 10s"),
            ("XAAS__SYNCS__DEMO__SOURCE__PAGE_SIZE", "500"),
            ("XAAS__SYNCS__DEMO__SOURCE__CLIENT_ID", "12345"),
            ("XAAS__SYNCS__DEMO__SOURCE__SELECT", r#"["id", "mail", "userPrincipalName", "department"]"#),
            ("XAAS__SYNCS__DEMO__TARGET__ALLOW_INSECURE_HTTP", "true"),
            ("XAAS__SYNCS__DEMO__LIMITS__COOLDOWN", "7s"),
            ("XAAS__SYNCS__DEMO__MAPPING__ATTRIBUTES__USERNAME", "mail"),
            ("XAAS__SYNCS__DEMO__FILTER__DEPARTMENT", "Sales"),
        ]);
        let text = include_str!("../../../xaas.toml");
        let err = error(text, &env);
        // The select override misses fields the default mapping reads.
        assert!(err.starts_with("syncs.demo.source.select: does not include \"city\""), "{err}");
        assert!(err.ends_with("(set by environment variable XAAS__SYNCS__DEMO__SOURCE__SELECT)"), "{err}");

        let env = |name: &str| {
            if name == "XAAS__SYNCS__DEMO__SOURCE__SELECT" { None } else { env(name) }
        };
        let config = parse(text, &env).unwrap();
        assert_eq!(config.broker.prefix, "xaas-test");
        assert_eq!(config.broker.retry_tiers, [Duration::from_secs(2), Duration::from_secs(10)]);
        let sync = demo(&config);
        assert_eq!(sync.source.page_size, 500);
        assert_eq!(sync.source.client_id, "12345", "an override is a string where a string is expected");
        assert!(sync.target.allow_insecure_http);
        assert_eq!(sync.limits.cooldown, Duration::from_secs(7));
        let username = sync.rules.mapping.attributes().find(|(a, _)| *a == "userName").unwrap();
        assert_eq!(username, ("userName", "mail"));
        assert!(sync.rules.filter.matches(&serde_json::json!({"department": "Sales"})));
    }

    #[test]
    fn a_bad_override_names_its_variable() {
        let env = with_secrets(&[("XAAS__SYNCS__DEMO__SOURCE__PAGE_SIZE", "lots")]);
        assert_eq!(
            error(MINIMAL, &env),
            "syncs.demo.source.page_size: expected an integer, found a string \
             (set by environment variable XAAS__SYNCS__DEMO__SOURCE__PAGE_SIZE)"
        );
        // An override that tries to smuggle in more TOML stays one string.
        let env = with_secrets(&[("XAAS__SYNCS__DEMO__SOURCE__PAGE_SIZE", "5\nextra = 1")]);
        assert!(error(MINIMAL, &env).contains("expected an integer, found a string"));
    }

    #[test]
    fn amqp_url_overrides_the_file_and_the_specific_override_wins() {
        let first = |config: Config| config.broker.addresses.first().url().expose_secret().to_string();
        let text = format!("[broker]\nurl = \"amqp://file:5672/%2f\"\n{MINIMAL}");
        assert_eq!(first(parse(&text, &with_secrets(&[])).unwrap()), "amqp://file:5672/%2f");
        let config = parse(&text, &with_secrets(&[("AMQP_URL", "amqp://u:p@generic/%2f")])).unwrap();
        assert_eq!(first(config), "amqp://u:p@generic/%2f");
        let env = with_secrets(&[("AMQP_URL", "amqp://generic/%2f"), ("XAAS__BROKER__URL", "amqps://specific/vh")]);
        assert_eq!(first(parse(&text, &env).unwrap()), "amqps://specific/vh");
        // The URL may hold a password: its errors do not quote it.
        let err = error(MINIMAL, &with_secrets(&[("AMQP_URL", "amqp://u:hunter2@[bad")]));
        assert!(err.starts_with("broker.url: the address (amqp://***@[bad) is not a valid URL"), "{err}");
        assert!(err.ends_with("(set by environment variable AMQP_URL)"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_broker_url_may_list_several_addresses() {
        let env = with_secrets(&[
            ("AMQP_URL", "amqp://u:hunter2@h1/%2f;amqp://u:hunter3@h2:5673/%2f"),
            ("XAAS__BROKER__CONNECT_TIMEOUT", "1s"),
        ]);
        let broker = parse(MINIMAL, &env).unwrap().broker;
        let hosts: Vec<_> = broker.addresses.iter().map(|a| (a.host().to_string(), a.port())).collect();
        assert_eq!(hosts, [("h1".to_string(), 5672), ("h2".to_string(), 5673)]);
        assert_eq!(broker.connect_timeout, Duration::from_secs(1));
        let err = error(MINIMAL, &with_secrets(&[("AMQP_URL", "amqp://u:hunter2@h1/%2f, http://u:hunter3@h2")]));
        assert!(
            err.starts_with("broker.url: address 2 of 2 (http://***@h2) has the scheme \"http\", not amqp or amqps"),
            "{err}"
        );
        assert!(!err.contains("hunter"), "{err}");
        let err = error(MINIMAL, &with_secrets(&[("AMQP_URL", " , ")]));
        assert!(err.starts_with("broker.url: holds no address"), "{err}");
    }

    #[test]
    fn http_urls_carry_no_credentials() {
        let text = MINIMAL.replace("https://acme.okta.com", "https://admin:hunter2@acme.okta.com");
        let err = error(&text, &with_secrets(&[]));
        assert_eq!(
            err,
            "syncs.demo.target.okta_url: \"https://***@acme.okta.com\" holds a user name or password; \
             remove them (credentials are set by their own settings)"
        );
        let text = MINIMAL.replace("https://acme.okta.com", "https://u:hunter2@[bad");
        let err = error(&text, &with_secrets(&[]));
        assert!(err.starts_with("syncs.demo.target.okta_url: \"https://***@[bad\" is not a valid URL"), "{err}");
    }

    #[test]
    fn a_custom_attribute_table_replaces_the_default() {
        let text = minimal_with(
            "syncs.demo.mapping.attributes",
            "userName = \"userPrincipalName\"\nemail = \"mail\"\nemployeeNumber = \"employeeId\"",
        );
        let config = parse(&text, &with_secrets(&[])).unwrap();
        let sync = demo(&config);
        let attrs: Vec<_> = sync.rules.mapping.attributes().collect();
        assert_eq!(attrs, [("email", "mail"), ("employeeNumber", "employeeId"), ("userName", "userPrincipalName")]);
        assert_eq!(sync.source.select, ["id", "accountEnabled", "mail", "employeeId", "userPrincipalName"]);

        let text = minimal_with("syncs.demo.mapping.attributes", "userName = \"userPrincipalName\"");
        assert_eq!(
            error(&text, &with_secrets(&[])),
            "syncs.demo.mapping.attributes: email is not mapped; Okta requires userName and email on every profile"
        );
        let text = minimal_with("syncs.demo.mapping.attributes", "userName = \"userPrincipalName\"\nemail = 5");
        assert_eq!(
            error(&text, &with_secrets(&[])),
            "syncs.demo.mapping.attributes.email: expected a string, found an integer"
        );
    }

    #[test]
    fn mapping_and_filter_errors_carry_the_full_path() {
        let text = minimal_with("syncs.demo.mapping", "external_id = \"user principal name\"");
        let err = error(&text, &with_secrets(&[]));
        assert!(
            err.starts_with("syncs.demo.mapping.external_id: \"user principal name\" is not a Graph user property"),
            "{err}"
        );
        let text = minimal_with("syncs.demo.filter", "department = 3");
        assert_eq!(
            error(&text, &with_secrets(&[])),
            "syncs.demo.filter.department: expected a string, found an integer"
        );
        let text = minimal_with("syncs.demo.filter", "accountEnabled = true");
        let config = parse(&text, &with_secrets(&[])).unwrap();
        assert!(demo(&config).rules.filter.matches(&serde_json::json!({"accountEnabled": true})));
    }

    #[test]
    fn an_explicit_select_must_cover_what_the_sync_reads() {
        let all = Mapping::original_workflow_attributes().into_values().collect::<Vec<_>>();
        let select = |fields: &[String]| {
            let list = fields.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ");
            MINIMAL.replace("client_id = \"app-1\"", &format!("client_id = \"app-1\"\nselect = [{list}]"))
        };
        let mut fields: Vec<String> = vec!["id".into()];
        fields.extend(all.iter().cloned());
        let config = parse(&select(&fields), &with_secrets(&[])).unwrap();
        assert_eq!(demo(&config).source.select, fields);

        let without_id = select(&fields[1..]);
        let err = error(&without_id, &with_secrets(&[]));
        assert!(err.starts_with("syncs.demo.source.select: does not include \"id\""), "{err}");
    }

    #[test]
    fn a_service_app_reads_its_key_from_a_file() {
        let text = MINIMAL.replace(
            "[syncs.demo.target]",
            "[syncs.demo.target]\nauth = \"service_app\"\nclient_id = \"0oasvc\"\nkey_id = \"k1\"\nprivate_key_file = \"/run/secrets/okta.pem\"",
        );
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
        let files = |p: &Path| -> std::io::Result<String> {
            if p == Path::new("/run/secrets/okta.pem") {
                Ok(pem.into())
            } else {
                Err(std::io::ErrorKind::NotFound.into())
            }
        };
        let env = env_of(&SECRETS[..1]);
        let config = parse(&text, &env).unwrap();
        match &demo(&config).target.auth {
            TargetAuth::ServiceApp { client_id, key_id, private_key } => {
                assert_eq!((client_id.as_str(), key_id.as_str()), ("0oasvc", "k1"));
                assert_eq!(private_key.resolve(&env, &files).unwrap().expose_secret(), pem.trim_end());
            }
            other => panic!("expected a service app, got {other:?}"),
        }
        let err = resolved(okta_secret(&config), &env).unwrap_err().to_string();
        assert!(err.starts_with("syncs.demo.target.private_key_file: cannot read \"/run/secrets/okta.pem\""), "{err}");

        let not_pem = |_: &Path| -> std::io::Result<String> { Ok("hunter2".into()) };
        let err = okta_secret(&config).resolve(&env, &not_pem).unwrap_err().to_string();
        assert_eq!(
            err,
            "syncs.demo.target.private_key_file: does not hold a PEM private key (expected a -----BEGIN PRIVATE KEY----- block)"
        );
    }

    #[test]
    fn a_service_app_reads_its_key_from_the_environment_by_default() {
        let text = MINIMAL.replace(
            "[syncs.demo.target]",
            "[syncs.demo.target]\nauth = \"service_app\"\nclient_id = \"0oasvc\"\nkey_id = \"k1\"",
        );
        let config = parse(&text, &env_of(&[])).unwrap();
        let err = resolved(okta_secret(&config), &env_of(&SECRETS[..1])).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "syncs.demo.target.private_key_env: environment variable XAAS_SYNC_DEMO_OKTA_PRIVATE_KEY is not set"
            ),
            "{err}"
        );
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----";
        let key = resolved(okta_secret(&config), &env_of(&[("XAAS_SYNC_DEMO_OKTA_PRIVATE_KEY", pem)])).unwrap();
        assert_eq!(key, pem);
        assert!(matches!(&demo(&config).target.auth, TargetAuth::ServiceApp { .. }));

        let err = error(&text.replace("key_id = \"k1\"", ""), &env_of(&SECRETS));
        assert!(err.starts_with("syncs.demo.target.key_id: missing;"), "{err}");
    }

    #[test]
    fn settings_of_the_other_auth_method_are_refused() {
        let text = MINIMAL.replace("[syncs.demo.target]", "[syncs.demo.target]\nkey_id = \"k1\"");
        assert_eq!(
            error(&text, &with_secrets(&[])),
            "syncs.demo.target.key_id: is only used with auth = \"service_app\""
        );
        let text = MINIMAL.replace(
            "[syncs.demo.target]",
            "[syncs.demo.target]\nauth = \"service_app\"\ntoken_env = \"T\"\nclient_id = \"c\"\nkey_id = \"k\"",
        );
        assert_eq!(
            error(&text, &with_secrets(&[])),
            "syncs.demo.target.token_env: is only used with auth = \"api_token\""
        );
        let text =
            MINIMAL.replace("[syncs.demo.target]", "[syncs.demo.target]\ntoken_env = \"T\"\ntoken_file = \"/t\"");
        assert_eq!(
            error(&text, &with_secrets(&[])),
            "syncs.demo.target.token_file: set either token_env or token_file, not both"
        );
    }

    #[test]
    fn an_unknown_sync_lists_the_configured_ones() {
        let other = MINIMAL.replace("syncs.demo", "syncs.other").replace("0oa1234567890abcdefg", "0oa2");
        let text = format!("{MINIMAL}\n{other}");
        let env = with_secrets(&[("XAAS_SYNC_OTHER_GRAPH_CLIENT_SECRET", "s"), ("XAAS_SYNC_OTHER_OKTA_TOKEN", "t")]);
        let config = parse(&text, &env).unwrap();
        let err = config.sync(&SyncName::parse("nope").unwrap()).unwrap_err();
        assert_eq!(err.to_string(), "no sync named \"nope\" is configured; configured syncs: demo, other");
        let empty = parse("", &env_of(&[])).unwrap();
        let err = empty.sync(&SyncName::parse("demo").unwrap()).unwrap_err();
        assert!(err.to_string().ends_with("configured syncs: none (add a [syncs.<name>] table to xaas.toml)"), "{err}");
    }

    #[test]
    fn the_retry_budget_has_defaults_and_refuses_nonsense() {
        let config = parse(MINIMAL, &with_secrets(&[])).unwrap();
        assert_eq!(demo(&config).retry, RetryBudget::DEFAULT);
        let text = format!("{MINIMAL}\n[syncs.demo.retry]\nattempts = 3\nwithin = \"20s\"\n");
        let retry = demo(&parse(&text, &with_secrets(&[])).unwrap()).retry;
        assert_eq!(retry, RetryBudget { attempts: 3, within: Duration::from_secs(20) });
        let text = format!("{MINIMAL}\n[syncs.demo.retry]\nattempts = 0\n");
        let err = parse(&text, &with_secrets(&[])).unwrap_err().to_string();
        assert!(err.starts_with("syncs.demo.retry.attempts:"), "{err}");
        let text = format!("{MINIMAL}\n[syncs.demo.retry]\nwithin = \"10ms\"\n");
        let err = parse(&text, &with_secrets(&[])).unwrap_err().to_string();
        assert!(err.starts_with("syncs.demo.retry.within:"), "{err}");
        let text = format!("{MINIMAL}\n[syncs.demo.retry]\ntries = 3\n");
        assert!(parse(&text, &with_secrets(&[])).unwrap_err().to_string().contains("syncs.demo.retry.tries"));
    }

    #[test]
    fn guards_default_to_a_tenth_of_the_roster_and_can_be_set_or_lifted() {
        let config = parse(MINIMAL, &with_secrets(&[])).unwrap();
        assert_eq!(demo(&config).guards, Guards::DEFAULT);
        assert_eq!(demo(&config).schedule_mode, Mode::Full);
        let text =
            format!("{MINIMAL}\n[syncs.demo.guards]\nmax_deactivations = 500\nmax_deactivations_percent = 2.5\n");
        let guards = demo(&parse(&text, &with_secrets(&[])).unwrap()).guards;
        assert_eq!(guards, Guards { max_deactivations: Some(500), max_deactivations_percent: Some(2.5) });
        let text = format!("{MINIMAL}\n[syncs.demo.guards]\nmax_deactivations_percent = \"none\"\n");
        assert_eq!(demo(&parse(&text, &with_secrets(&[])).unwrap()).guards.max_deactivations_percent, None);
        let text = format!("{MINIMAL}\n[syncs.demo.guards]\nmax_deactivations_percent = 150\n");
        assert_eq!(
            error(&text, &with_secrets(&[])),
            "syncs.demo.guards.max_deactivations_percent: 150 is not a percentage; expected 0 to 100, or \"none\""
        );
        let env = with_secrets(&[("XAAS__SYNCS__DEMO__GUARDS__MAX_DEACTIVATIONS", "7")]);
        let text = format!("{MINIMAL}\n[syncs.demo.guards]\n");
        assert_eq!(demo(&parse(&text, &env).unwrap()).guards.max_deactivations, Some(7));
        let text =
            MINIMAL.replace("[syncs.demo.source]", "[syncs.demo]\nschedule_mode = \"hourly\"\n[syncs.demo.source]");
        assert!(error(&text, &with_secrets(&[])).starts_with("syncs.demo.schedule_mode: \"hourly\" is not a mode"));
    }

    #[test]
    fn two_syncs_may_not_load_into_one_identity_source() {
        let env = with_secrets(&[]);
        let a = MINIMAL.replace("syncs.demo", "syncs.a");
        let b = MINIMAL.replace("syncs.demo", "syncs.b").replace("acme.okta.com", "login.acme.com");
        // Another URL of the same org does not make it another identity source.
        assert_eq!(
            error(&format!("{a}\n{b}"), &env),
            "syncs.b.target.identity_source_id: the identity source 0oa1234567890abcdefg is already synced by \
             syncs.a; two syncs loading into one identity source would share its sessions and cooldown"
        );
        let c = MINIMAL.replace("syncs.demo", "syncs.b").replace("0oa1234567890abcdefg", "0oa2");
        assert!(parse(&format!("{a}\n{c}"), &env).is_ok());
        // The same holds when an override makes them collide.
        let env = with_secrets(&[("XAAS__SYNCS__B__TARGET__IDENTITY_SOURCE_ID", "0oa1234567890abcdefg")]);
        let err = error(&format!("{a}\n{c}"), &env);
        assert!(err.starts_with("syncs.b.target.identity_source_id: the identity source 0oa1234567890abcdefg is already synced by syncs.a;"), "{err}");
        // Three syncs: the first two name it, whichever comes first in name order.
        let d = MINIMAL.replace("syncs.demo", "syncs.d").replace("0oa1234567890abcdefg", "0oa2");
        let err = error(&format!("{a}\n{c}\n{d}"), &with_secrets(&[]));
        assert!(
            err.starts_with(
                "syncs.d.target.identity_source_id: the identity source 0oa2 is already synced by syncs.b;"
            ),
            "{err}"
        );
    }

    #[test]
    fn delta_runs_get_the_source_filter_and_its_properties_are_selected() {
        let text = MINIMAL.replace(
            "client_id = \"app-1\"",
            "client_id = \"app-1\"\nfilter = \"userType eq 'Member' and accountEnabled eq true\"",
        );
        let source = demo(&parse(&text, &with_secrets(&[])).unwrap()).source.clone();
        let filter = source.delta_filter.clone().unwrap().unwrap();
        assert_eq!(filter.properties(), ["userType", "accountEnabled"]);
        assert!(source.select.iter().any(|s| s == "userType"), "{:?}", source.select);
        // An explicit select must hold them, as it must what the mapping reads.
        let text = text.replace("filter =", "select = [\"id\", \"accountEnabled\"]\nfilter =");
        let all = "id,accountEnabled,userPrincipalName,mail,givenName,surname,displayName,department,mobilePhone,\
                   city,state,postalCode,country,streetAddress,companyName,jobTitle";
        let select: Vec<String> = all.split(',').map(|f| format!("{f:?}")).collect();
        let text = text.replace("[\"id\", \"accountEnabled\"]", &format!("[{}]", select.join(", ")));
        let err = error(&text, &with_secrets(&[]));
        assert!(err.starts_with("syncs.demo.source.select: does not include \"userType\""), "{err}");
        // A filter beyond eq clauses still serves full runs; delta runs get why not.
        let text =
            MINIMAL.replace("client_id = \"app-1\"", "client_id = \"app-1\"\nfilter = \"startswith(displayName,'A')\"");
        let source = demo(&parse(&text, &with_secrets(&[])).unwrap()).source.clone();
        assert_eq!(source.filter.as_deref(), Some("startswith(displayName,'A')"));
        assert!(matches!(source.delta_filter, Some(Err(FilterError::Unsupported(_)))));
        assert!(demo(&parse(MINIMAL, &with_secrets(&[])).unwrap()).source.delta_filter.is_none());
    }
}
