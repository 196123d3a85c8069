//! The sandbox's flags. Each is also settable from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Parses durations written like `300ms`, `2s` or `5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 300ms, 2s or 5m: {e}"))
}

/// Parses a share such as `0.1`: a fraction between 0 and 1.
pub fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share between 0 and 1, like 0.1")),
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct SimConfig {
    /// Address to listen on. Loopback by default: the sandbox holds test credentials.
    #[arg(long, env = "XAAS_SIM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The only identity source ID that exists; others get 404 E0000007.
    #[arg(long, env = "XAAS_SIM_IDENTITY_SOURCE_ID", default_value = "0oasandbox00000000001")]
    pub identity_source_id: String,

    /// Okta API token, accepted as `Authorization: SSWS <token>`.
    #[arg(long, env = "XAAS_SIM_OKTA_TOKEN", default_value = "sandbox-okta-token", hide_env_values = true)]
    pub okta_token: String,

    /// Client ID of the Okta OAuth service app the sandbox accepts (private_key_jwt).
    #[arg(long, env = "XAAS_SIM_OKTA_CLIENT_ID", default_value = "0oasandboxservice0001")]
    pub okta_client_id: String,

    /// PEM public key that verifies the service app's client assertions. When
    /// absent, assertions are checked for shape and claims only.
    #[arg(long, env = "XAAS_SIM_OKTA_PUBLIC_KEY")]
    pub okta_public_key: Option<PathBuf>,

    /// Entra tenant accepted by the token endpoint.
    #[arg(long, env = "XAAS_SIM_GRAPH_TENANT", default_value = "sandbox-tenant")]
    pub graph_tenant: String,

    /// Client ID of the Entra app registration the token endpoint accepts.
    #[arg(long, env = "XAAS_SIM_GRAPH_CLIENT_ID", default_value = "sandbox-client")]
    pub graph_client_id: String,

    /// Client secret of that app registration.
    #[arg(long, env = "XAAS_SIM_GRAPH_CLIENT_SECRET", default_value = "sandbox-secret", hide_env_values = true)]
    pub graph_client_secret: String,

    /// Lifetime of issued access tokens (Entra and Okta).
    #[arg(long, env = "XAAS_SIM_TOKEN_TTL", default_value = "1h", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// No new session within this long after a trigger (Okta: 5 minutes).
    #[arg(long, env = "XAAS_SIM_COOLDOWN", default_value = "5m", value_parser = parse_duration)]
    pub cooldown: Duration,

    /// How long Okta takes to process one triggered session.
    #[arg(long, env = "XAAS_SIM_IMPORT_DURATION", default_value = "2s", value_parser = parse_duration)]
    pub import_duration: Duration,

    /// A CREATED/IN_PROGRESS session with no requests for this long becomes EXPIRED (Okta: 24h).
    #[arg(long, env = "XAAS_SIM_SESSION_IDLE_EXPIRY", default_value = "24h", value_parser = parse_duration)]
    pub session_idle_expiry: Duration,

    /// Okta's per-request and per-session limits; only a simulation lowers them.
    #[arg(skip)]
    pub okta_limits: crate::okta::bulk::OktaLimits,

    /// Okta requests allowed per minute before 429 E0000047.
    #[arg(long, env = "XAAS_SIM_RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u32,

    /// Length of Okta's rate-limit window (Okta: about a minute). Tests shorten
    /// it so that a 429's `X-Rate-Limit-Reset` is seconds away, not a minute;
    /// the limit then counts per window.
    #[arg(long, env = "XAAS_SIM_RATE_LIMIT_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub rate_limit_window: Duration,

    /// Seed the source directory from the original workflow's sampleUsers.csv.
    #[arg(long, env = "XAAS_SIM_SEED_CSV")]
    pub seed_csv: Option<PathBuf>,

    /// Seed the source directory with N generated users.
    #[arg(long, env = "XAAS_SIM_GENERATE")]
    pub generate: Option<usize>,

    /// Seed of the generator, so generated users are the same every time.
    #[arg(long, env = "XAAS_SIM_RNG_SEED", default_value_t = 42)]
    pub rng_seed: u64,

    /// The tenant's domain, used for userPrincipalName and mail when seeding from CSV.
    #[arg(long, env = "XAAS_SIM_DOMAIN", default_value = "sandbox.example.com")]
    pub domain: String,

    /// Share (0..=1) of generated users that are disabled (`accountEnabled: false`).
    #[arg(long, env = "XAAS_SIM_GENERATE_DISABLED_SHARE", default_value_t = 0.10, value_parser = parse_share)]
    pub generate_disabled_share: f64,

    /// Share (0..=1) of generated users outside the workflow's department ("Okta Workflows").
    #[arg(long, env = "XAAS_SIM_GENERATE_OTHER_DEPT_SHARE", default_value_t = 0.30, value_parser = parse_share)]
    pub generate_other_dept_share: f64,

    /// Share (0..=1) of generated users with non-ASCII names (é, ø, ü, Chinese, Greek, ...).
    #[arg(long, env = "XAAS_SIM_GENERATE_NON_ASCII_SHARE", default_value_t = 0.15, value_parser = parse_share)]
    pub generate_non_ascii_share: f64,

    /// How many generated users are deliberately malformed (missing mail, over-long
    /// givenName, non-string department, duplicate id or userPrincipalName, empty
    /// userPrincipalName), to prove the product rejects them one by one.
    #[arg(long, env = "XAAS_SIM_GENERATE_MALFORMED", default_value_t = 0)]
    pub generate_malformed: usize,
}

impl SimConfig {
    /// The defaults of every flag, for tests and embedding.
    pub fn defaults() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            cfg: SimConfig,
        }
        Wrap::parse_from(["sim"]).cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("five").is_err());
    }

    #[test]
    fn defaults_match_okta() {
        let c = SimConfig::defaults();
        assert_eq!(c.cooldown, Duration::from_secs(300));
        assert_eq!(c.identity_source_id, "0oasandbox00000000001");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.rate_limit_window, Duration::from_secs(60));
    }
}
