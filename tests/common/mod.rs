//! Shared harness for the integration tests: the example config, an engine on the in-memory
//! simulator in virtual time, and the parts of a world that a failover must change.

#![allow(dead_code)]

use dr::clock::{Clock, VirtualClock};
use dr::config::Config;
use dr::core::ids::{Actor, RunId};
use dr::core::plan::{PlanRequest, RunKind, build_plan};
use dr::core::run::Trigger;
use dr::core::time::Timestamp;
use dr::engine::{Engine, EngineSettings, NewRun, Silent};
use dr::provider::Providers;
use dr::provider::sim::{SimProvider, World};
use dr::store::Store;
use std::path::Path;
use std::sync::Arc;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A folder holding `dr.toml`: the example config on the simulator at 3000x, its API on `port`.
pub fn fast_sim_dir(port: u16) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
        .unwrap()
        .replace("time_scale = 60", "time_scale = 3000")
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
    std::fs::write(dir.path().join("dr.toml"), text).unwrap();
    dir
}

/// The example config, with paths under `dir`.
pub fn example_config(dir: &Path) -> Config {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
        .unwrap();
    dr::config::parse(&text, &dir.join("dr.toml")).unwrap()
}

/// A config shipped in `config/`, as it is.
pub fn shipped_config(name: &str) -> Config {
    dr::config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name),
    )
    .unwrap()
}

/// The shipped three-region config: the example plus eu-west-1 (`config/three-region.toml`).
pub fn three_region_config() -> Config {
    shipped_config("three-region.toml")
}

/// The example config's text with its commented-out third region uncommented: what
/// `config/three-region.toml` must stay.
pub fn example_with_third_region() -> Config {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
        .unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            l.strip_prefix("# ~ ")
                .or(l.strip_prefix("# ~"))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n");
    dr::config::parse(&text, Path::new("three.toml")).unwrap()
}

/// A simulator world in memory on a virtual clock.
pub fn sim(config: &Config) -> (Arc<SimProvider>, Arc<dyn Clock>) {
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::starting_at(Timestamp(0)));
    let world = World::new(&config.topology, config.sim.seed, Timestamp(0));
    (
        Arc::new(SimProvider::in_memory(world, clock.clone())),
        clock,
    )
}

/// An engine over `store` and `sim`.
pub fn engine(store: Arc<dyn Store>, sim: &Arc<SimProvider>, clock: &Arc<dyn Clock>) -> Engine {
    Engine {
        store,
        providers: Providers::all_from(sim.clone()),
        clock: clock.clone(),
        progress: Arc::new(Silent),
        settings: EngineSettings::default(),
        fence: Default::default(),
    }
}

/// Creates the seed's failover run, us-east-1 to us-west-2.
pub fn create_failover(
    engine: &Engine,
    config: &Config,
    id: &str,
    kind: RunKind,
    from: &str,
    to: &str,
) -> RunId {
    let id = RunId::new(id);
    let request = PlanRequest {
        from: from.into(),
        to: to.into(),
        kind,
    };
    let plan = build_plan(&config.topology, &request, &config.plan).unwrap();
    engine
        .create_run(
            plan,
            NewRun {
                id: id.clone(),
                trigger: Trigger::Manual {
                    actor: Actor::new("test"),
                },
                actor: Actor::new("test"),
                reason: "test".into(),
                dry_run: false,
            },
        )
        .unwrap();
    id
}

/// What a failover changes: writer, group sizes, records. Timings and ids are left out.
pub fn outcome_of(world: &World) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = world
        .regions
        .iter()
        .map(|(name, region)| {
            serde_json::json!({
                "region": name,
                "nodegroups": region.nodegroups.iter().map(|(n, g)| (n.clone(), serde_json::json!({"sizes": g.sizes, "ready": g.ready_nodes}))).collect::<std::collections::BTreeMap<_, _>>(),
                "asgs": region.asgs.iter().map(|(n, g)| (n.clone(), serde_json::json!({"sizes": g.sizes, "in_service": g.in_service}))).collect::<std::collections::BTreeMap<_, _>>(),
            })
        })
        .collect();
    let mut records = world.records.clone();
    records.sort();
    serde_json::json!({
        "writer": world.writer_region(),
        "promotion_in_flight": world.promotion.is_some(),
        "groups": groups,
        "records": records,
    })
}

/// How many times each mutating operation reached the world.
pub fn mutation_counts(world: &World) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for call in &world.calls {
        *counts
            .entry(format!("{} {}", call.operation, call.resource))
            .or_insert(0) += 1;
    }
    counts
}
pub mod moto;
