//! `xaas demo`: the newcomer's main job. It starts the sandbox with the
//! original workflow's sample users, runs every worker in this process
//! against the broker at `AMQP_URL`, runs a full sync of the `demo` sync and
//! prints the report. It uses queues of its own (a unique prefix) and
//! removes them at the end, so it never disturbs a real deployment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use xaas_core::{Mode, SyncName};
use xaas_sim::SimConfig;
use xaas_workers::commands::{self, EnqueueArgs};
use xaas_workers::deps::Needs;
use xaas_workers::{Deps, Role, StartupError, app};

use crate::Failure;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The sample table to seed the sandbox's directory with.
    #[arg(long, default_value = "examples/sampleUsers.csv")]
    pub seed_csv: PathBuf,
    /// Generate this many users instead of the sample table.
    #[arg(long, conflicts_with = "seed_csv")]
    pub generate: Option<usize>,
    /// Okta's cooldown between sessions, shortened for the demo.
    #[arg(long, default_value = "5s", value_parser = xaas_sim::config::parse_duration)]
    pub cooldown: Duration,
}

const DEMO_SYNC: &str = "demo";

pub async fn run(config_path: &Path, args: DemoArgs) -> Result<(), Failure> {
    if args.generate.is_none() && !args.seed_csv.exists() {
        return Err(StartupError::Other(format!(
            "{}: not found; run the demo from the repository root or pass --seed-csv",
            args.seed_csv.display()
        ))
        .into());
    }
    let mut sim_cfg = SimConfig::defaults();
    sim_cfg.listen = "127.0.0.1:0".parse().map_err(|e| StartupError::Other(format!("{e}")))?;
    sim_cfg.cooldown = args.cooldown;
    sim_cfg.import_duration = Duration::from_secs(1);
    sim_cfg.seed_csv = args.generate.is_none().then(|| args.seed_csv.clone());
    sim_cfg.generate = args.generate;
    let sim = xaas_sim::app::spawn(sim_cfg.clone()).await.map_err(|e| StartupError::Other(format!("sandbox: {e}")))?;
    let base = sim.base_url();
    eprintln!("sandbox listening on {base}");

    // The demo sync of xaas.toml, pointed at this sandbox, with its secrets
    // defaulting to the sandbox's own.
    let prefix = format!("xaas-demo-{}", &uuid_like()[..8]);
    let cooldown = format!("{}ms", args.cooldown.as_millis());
    let env = move |key: &str| -> Option<String> {
        let value = match key {
            "XAAS__SYNCS__DEMO__SOURCE__AUTHORITY_URL"
            | "XAAS__SYNCS__DEMO__SOURCE__GRAPH_URL"
            | "XAAS__SYNCS__DEMO__TARGET__OKTA_URL" => Some(base.clone()),
            "XAAS__SYNCS__DEMO__LIMITS__COOLDOWN" => Some(cooldown.clone()),
            "XAAS__BROKER__PREFIX" => Some(prefix.clone()),
            _ => None,
        };
        value.or_else(|| std::env::var(key).ok()).or_else(|| match key {
            "XAAS_SYNC_DEMO_GRAPH_CLIENT_SECRET" => Some(sim_cfg.graph_client_secret.clone()),
            "XAAS_SYNC_DEMO_OKTA_TOKEN" => Some(sim_cfg.okta_token.clone()),
            _ => None,
        })
    };
    let config = app::load_config_with(config_path, &env)?;
    let sync = SyncName::parse(DEMO_SYNC).map_err(|e| StartupError::Other(e.to_string()))?;
    config.sync(&sync).map_err(StartupError::Config)?;
    if !any_broker_answers(&config.broker.addresses).await {
        return Err(StartupError::Other(format!(
            "broker.url: no RabbitMQ answers at {}: start one (`docker compose up rabbitmq`, `docker run -d -p 5672:5672 rabbitmq:4.2-management`, or Debian's rabbitmq-server) or point AMQP_URL at yours",
            config.broker.addresses,
        ))
        .into());
    }
    let broker = app::connect(&config, "demo").await?;
    let deps = Deps::build(config, broker.clone(), Needs::ALL, &env)?;

    let shutdown = CancellationToken::new();
    let workers = tokio::spawn(xaas_workers::runtime::run(deps, Role::All, shutdown.clone()));
    let args = EnqueueArgs {
        sync,
        mode: Mode::Full,
        dry_run: false,
        force: false,
        allow_mass_deactivation: false,
        users: Vec::new(),
        run_id: None,
        wait: true,
        timeout: Some(Duration::from_secs(30 * 60)),
        json: false,
    };
    let result = commands::enqueue(&broker, args).await;
    shutdown.cancel();
    let _ = workers.await;

    let users = xaas_sim::app::lock(&sim.state.okta).users.len();
    println!("The sandbox's Okta org now holds {users} users from the identity source.");
    if let Err(e) = broker.delete_everything().await {
        eprintln!("could not remove the demo's queues: {e}");
    }
    broker.close().await;
    sim.stop().await;
    result?;
    Ok(())
}

fn uuid_like() -> String {
    xaas_core::RunId::generate().to_string().replace('-', "")
}

/// Whether any broker address accepts TCP within two seconds: a newcomer
/// without RabbitMQ gets the advice at once instead of after the connect
/// timeout's retries.
async fn any_broker_answers(addresses: &xaas_core::broker_address::BrokerAddresses) -> bool {
    for a in addresses.iter() {
        let connect = tokio::net::TcpStream::connect((a.host(), a.port()));
        if matches!(tokio::time::timeout(Duration::from_secs(2), connect).await, Ok(Ok(_))) {
            return true;
        }
    }
    false
}
