//! Helpers shared by the integration tests: a broker under a unique prefix
//! per test, cleaned up at the end (also when the test fails).

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use futures_lite::StreamExt;
use xaas_broker::{Broker, BrokerConfig, Consumer, Incoming};
use xaas_core::{RunId, SyncName, SyncRequest};

/// Guards against hangs only; never a statement about speed.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| BrokerConfig::DEFAULT_URL.into())
}

/// A configuration with a fresh prefix and short retry tiers.
pub fn config() -> BrokerConfig {
    let prefix = format!("t-{}", uuid::Uuid::new_v4());
    let mut cfg = BrokerConfig::new(url().parse().expect("AMQP_URL is a valid broker address"));
    cfg.connection_name = prefix.clone();
    cfg.prefix = prefix;
    cfg.retry_tiers = vec![Duration::from_millis(200), Duration::from_millis(400)];
    cfg.delivery_limit = 2;
    cfg.max_attempts = 2;
    cfg.connect_timeout = Duration::from_secs(20);
    cfg.confirm_timeout = Duration::from_secs(20);
    cfg.max_message_bytes = 64 * 1024;
    cfg
}

/// A connected broker with its topology declared, deleted on drop.
pub struct TestBroker {
    pub broker: Broker,
    cfg: BrokerConfig,
    syncs: Vec<SyncName>,
    cleaned: bool,
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::with(config()).await
    }

    pub async fn with(cfg: BrokerConfig) -> Self {
        let broker = Broker::connect(cfg.clone()).await.expect("connect to the test broker (AMQP_URL)");
        broker.declare().await.expect("declare");
        Self { broker, cfg, syncs: Vec::new(), cleaned: false }
    }

    pub async fn sync(&mut self, name: &str) -> SyncName {
        let sync = SyncName::parse(name).unwrap();
        self.broker.declare_sync(&sync).await.unwrap();
        self.syncs.push(sync.clone());
        sync
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.cfg
    }

    /// Deletes everything this test created and closes the connection.
    pub async fn cleanup(mut self) {
        self.broker.delete_everything().await.expect("delete_everything");
        self.broker.close().await;
        self.cleaned = true;
    }
}

impl Drop for TestBroker {
    /// A failed test still removes its queues, on a connection of its own.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let cfg = self.cfg.clone();
        let syncs = self.syncs.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Runtime::new() else { return };
            rt.block_on(async move {
                if let Ok(b) = Broker::connect(cfg).await {
                    for s in &syncs {
                        b.delete_sync(s);
                    }
                    let _ = b.delete_everything().await;
                    b.close().await;
                }
            });
        })
        .join();
    }
}

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next delivery, failing the test on a stream error or end.
pub async fn next(consumer: &mut Consumer) -> Incoming {
    within("a delivery", consumer.next()).await.expect("consumer ended").expect("consumer error")
}

pub fn request(sync: &str, run: &str) -> SyncRequest {
    SyncRequest {
        v: xaas_core::MESSAGE_VERSION,
        sync: SyncName::parse(sync).unwrap(),
        mode: Default::default(),
        dry_run: false,
        run_id: Some(RunId::parse(run).unwrap()),
        force: false,
        allow_mass_deactivation: false,
        users: Vec::new(),
    }
}
