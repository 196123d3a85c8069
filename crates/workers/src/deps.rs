//! What every stage handler needs: the broker, the configuration and, per
//! configured sync, the API clients its role uses, built once at start so
//! that a bad setting or a missing secret stops the worker before it takes
//! any message. Only the fetcher reads the source's secret and only the
//! uploader Okta's: a process builds just the clients its role needs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use xaas_broker::Broker;
use xaas_core::SyncName;
use xaas_core::config::{Config, EnvLookup, SyncConfig, TargetAuth};
use xaas_graph::{GraphClient, GraphSettings, UsersQuery};
use xaas_okta::{OktaAuth, OktaClient, OktaSettings};

use crate::error::StartupError;
use crate::runtime::Role;

/// Which API clients a process builds, and so which secrets it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Graph, with the source's client secret: the fetcher.
    pub graph: bool,
    /// Okta, with its API token or service-app key: the uploader.
    pub okta: bool,
}

impl Needs {
    /// Every client: `worker all` and the demo.
    pub const ALL: Needs = Needs { graph: true, okta: true };

    /// What the stages of `role` call.
    pub fn of(role: Role) -> Self {
        match role {
            Role::Fetcher => Needs { graph: true, okta: false },
            Role::Uploader => Needs { graph: false, okta: true },
            Role::Mapper | Role::Scheduler => Needs { graph: false, okta: false },
            Role::All => Self::ALL,
        }
    }
}

/// The clients of one sync; those its process does not need are `None`.
pub struct SyncClients {
    pub config: SyncConfig,
    graph: Option<GraphClient>,
    okta: Option<OktaClient>,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct Deps {
    pub broker: Broker,
    pub config: Arc<Config>,
    syncs: Arc<BTreeMap<SyncName, SyncClients>>,
}

/// The clients of every configured sync, built before the broker is
/// connected: a bad URL or a missing secret then stops start-up with its
/// setting named before anything else happens.
pub struct Clients(BTreeMap<SyncName, SyncClients>);

impl Clients {
    /// Builds the clients `needs` asks for, for every configured sync,
    /// reading their secrets from `env` (or the files their settings name).
    /// Nothing is sent yet.
    pub fn build(config: &Config, needs: Needs, env: EnvLookup<'_>) -> Result<Self, StartupError> {
        let mut syncs = BTreeMap::new();
        for sync in config.syncs() {
            syncs.insert(sync.name.clone(), SyncClients::build(sync, needs, env)?);
        }
        Ok(Self(syncs))
    }

    /// The clients of `name`, for a command that needs no broker.
    pub fn sync(&self, name: &SyncName) -> Option<&SyncClients> {
        self.0.get(name)
    }
}

impl Deps {
    /// Builds the clients `needs` asks for, for every configured sync.
    pub fn build(config: Config, broker: Broker, needs: Needs, env: EnvLookup<'_>) -> Result<Self, StartupError> {
        let clients = Clients::build(&config, needs, env)?;
        Ok(Self::new(config, broker, clients))
    }

    pub fn new(config: Config, broker: Broker, clients: Clients) -> Self {
        Self { broker, config: Arc::new(config), syncs: Arc::new(clients.0) }
    }

    /// The clients of `name`, or `None` when no such sync is configured.
    pub fn sync(&self, name: &SyncName) -> Option<&SyncClients> {
        self.syncs.get(name)
    }

    pub fn sync_names(&self) -> impl Iterator<Item = &SyncName> {
        self.syncs.keys()
    }
}

fn read_file(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

impl SyncClients {
    fn build(sync: &SyncConfig, needs: Needs, env: EnvLookup<'_>) -> Result<Self, StartupError> {
        let url = |key: &str, value: &str, insecure: bool| {
            xaas_http::parse_base_url(&sync.setting(key), value, insecure).map_err(StartupError::Url)
        };
        let client_error =
            |e: &dyn std::fmt::Display| StartupError::Client { sync: sync.name.to_string(), error: e.to_string() };
        let graph = if needs.graph {
            let source = &sync.source;
            let settings = GraphSettings {
                authority_url: url("source.authority_url", &source.authority_url, source.allow_insecure_http)?,
                graph_url: url("source.graph_url", &source.graph_url, source.allow_insecure_http)?,
                tenant: source.tenant.clone(),
                client_id: source.client_id.clone(),
                client_secret: source.client_secret.resolve(env, &read_file)?,
                timeout: Duration::from_secs(60),
                max_in_process_retries: 3,
                max_retry_after: Duration::from_secs(30),
            };
            Some(GraphClient::new(settings).map_err(|e| client_error(&e))?)
        } else {
            None
        };
        let okta = if needs.okta {
            let target = &sync.target;
            let auth = match &target.auth {
                TargetAuth::ApiToken(token) => OktaAuth::ApiToken(token.resolve(env, &read_file)?),
                TargetAuth::ServiceApp { client_id, key_id, private_key } => OktaAuth::ServiceApp {
                    client_id: client_id.clone(),
                    key_id: Some(key_id.clone()).filter(|k| !k.is_empty()),
                    private_key_pem: private_key.resolve(env, &read_file)?,
                },
            };
            let base = url("target.okta_url", &target.okta_url, target.allow_insecure_http)?;
            let settings = OktaSettings::new(base, target.identity_source_id.clone(), auth);
            Some(OktaClient::new(settings).map_err(|e| client_error(&e))?)
        } else {
            None
        };
        Ok(Self { config: sync.clone(), graph, okta })
    }

    /// The Graph client, in a process that fetches.
    pub fn graph(&self) -> Option<&GraphClient> {
        self.graph.as_ref()
    }

    /// The Okta client, in a process that uploads.
    pub fn okta(&self) -> Option<&OktaClient> {
        self.okta.as_ref()
    }

    /// The query of a run's first page: what the mode reads.
    pub fn users_query(&self, mode: xaas_core::Mode) -> UsersQuery {
        let source = &self.config.source;
        let filter = match mode {
            // The original workflow's second main flow: disabled users only.
            xaas_core::Mode::Deactivate => Some("accountEnabled eq false".to_string()),
            xaas_core::Mode::Full => source.filter.clone(),
            // Graph refuses $filter on delta (other than by id): the mapper
            // applies `source.delta_filter` to each record instead.
            xaas_core::Mode::Delta => None,
        };
        UsersQuery { page_size: source.page_size, select: source.select.clone(), filter }
    }
}
