//! What every stage handler needs: the broker, the configuration and one
//! Graph and one Okta client per configured sync, built once at start so that
//! a bad setting stops the worker before it takes any message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use xaas_broker::Broker;
use xaas_core::SyncName;
use xaas_core::config::{Config, SyncConfig, TargetAuth};
use xaas_graph::{GraphClient, GraphSettings, UsersQuery};
use xaas_okta::{OktaAuth, OktaClient, OktaSettings};

use crate::error::StartupError;

/// The clients of one sync.
pub struct SyncClients {
    pub config: SyncConfig,
    pub graph: GraphClient,
    pub okta: OktaClient,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct Deps {
    pub broker: Broker,
    pub config: Arc<Config>,
    syncs: Arc<BTreeMap<SyncName, SyncClients>>,
}

/// The clients of every configured sync, built before the broker is
/// connected: a bad URL or key then stops start-up with its setting named
/// before anything else happens.
pub struct Clients(BTreeMap<SyncName, SyncClients>);

impl Clients {
    /// Builds a client pair for every configured sync. Nothing is sent yet.
    pub fn build(config: &Config) -> Result<Self, StartupError> {
        let mut syncs = BTreeMap::new();
        for sync in config.syncs() {
            syncs.insert(sync.name.clone(), SyncClients::build(sync)?);
        }
        Ok(Self(syncs))
    }
}

impl Deps {
    /// Builds a client pair for every configured sync. Nothing is sent yet.
    pub fn build(config: Config, broker: Broker) -> Result<Self, StartupError> {
        let clients = Clients::build(&config)?;
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

impl SyncClients {
    fn build(sync: &SyncConfig) -> Result<Self, StartupError> {
        let source = &sync.source;
        let url = |key: &str, value: &str, insecure: bool| {
            xaas_http::parse_base_url(&sync.setting(key), value, insecure).map_err(StartupError::Url)
        };
        let graph = GraphClient::new(GraphSettings {
            authority_url: url("source.authority_url", &source.authority_url, source.allow_insecure_http)?,
            graph_url: url("source.graph_url", &source.graph_url, source.allow_insecure_http)?,
            tenant: source.tenant.clone(),
            client_id: source.client_id.clone(),
            client_secret: source.client_secret.clone(),
            timeout: Duration::from_secs(60),
            max_in_process_retries: 3,
            max_retry_after: Duration::from_secs(30),
        })
        .map_err(|e| StartupError::Client { sync: sync.name.to_string(), error: e.to_string() })?;
        let target = &sync.target;
        let auth = match &target.auth {
            TargetAuth::ApiToken(token) => OktaAuth::ApiToken(token.clone()),
            TargetAuth::ServiceApp { client_id, key_id, private_key_pem } => OktaAuth::ServiceApp {
                client_id: client_id.clone(),
                key_id: Some(key_id.clone()).filter(|k| !k.is_empty()),
                private_key_pem: private_key_pem.clone(),
            },
        };
        let base = url("target.okta_url", &target.okta_url, target.allow_insecure_http)?;
        let okta = OktaClient::new(OktaSettings::new(base, target.identity_source_id.clone(), auth))
            .map_err(|e| StartupError::Client { sync: sync.name.to_string(), error: e.to_string() })?;
        Ok(Self { config: sync.clone(), graph, okta })
    }

    /// The query of a run's first page: what the mode reads.
    pub fn users_query(&self, mode: xaas_core::Mode) -> UsersQuery {
        let source = &self.config.source;
        let filter = match mode {
            // The original workflow's second main flow: disabled users only.
            xaas_core::Mode::Deactivate => Some("accountEnabled eq false".to_string()),
            xaas_core::Mode::Full => source.filter.clone(),
            // Graph refuses $filter on delta (other than by id).
            xaas_core::Mode::Delta => None,
        };
        UsersQuery { page_size: source.page_size, select: source.select.clone(), filter }
    }
}
