//! The built-in simulator: every provider trait implemented on one simulated `World`.
//!
//! The world lives in memory (drills, tests) or in a state file shared by `dr` commands, locked
//! for each call and replaced atomically, so `dr failover` then `dr status` behave as they would
//! against AWS. This module owns persistence and the trait glue; the model is `world`.

pub mod world;

use crate::clock::{Clock, WallClock};
use crate::core::health::ProbeResult;
use crate::core::ids::RegionName;
use crate::core::plan::RecordChange;
use crate::core::time::Timestamp;
use crate::core::topology::{LatencyRecord, Sizes, Topology};
use crate::provider::{
    AsgState, ChangeStatus, CheckerReport, Compute, Database, Dns, DnsAnswers, DnsType,
    GlobalCluster, HealthChecks, NodegroupState, Probe, ProviderError, ReplicationLag, UpdateState,
};
use async_trait::async_trait;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
pub use world::{FaultKind, OutageKind, World};

/// A simulator state file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Reading, writing or locking failed.
    #[error("simulator state file {path}: {detail}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The file is not a world this build reads, or was made for another config.
    #[error(
        "simulator state file {path} cannot be used: {detail}; move it aside or run `dr sim reset --config ...` to start a new world"
    )]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

enum Backing {
    Memory(Box<Mutex<World>>),
    File(PathBuf),
}

/// Hears about every call that reached the simulated world, after it took effect.
pub type CallObserver = Arc<dyn Fn(&str) + Send + Sync>;

/// The simulator, as every provider at once.
pub struct SimProvider {
    backing: Backing,
    clock: Arc<dyn Clock>,
    observer: Mutex<Option<CallObserver>>,
}

impl SimProvider {
    /// A simulator whose world lives in memory, on `clock`.
    pub fn in_memory(world: World, clock: Arc<dyn Clock>) -> SimProvider {
        SimProvider {
            backing: Backing::Memory(Box::new(Mutex::new(world))),
            clock,
            observer: Mutex::new(None),
        }
    }

    /// Sets (or clears) the observer of calls. Tests use it to stop an engine at an exact call.
    pub fn observe_calls(&self, observer: Option<CallObserver>) {
        *self.observer.lock().unwrap_or_else(|p| p.into_inner()) = observer;
    }

    /// The simulator of a state file, created from `topology` if it does not exist. Returns the
    /// provider and the clock that all users of this file share.
    pub fn open_file(
        path: &Path,
        topology: &Topology,
        seed: u64,
        time_scale: f64,
    ) -> Result<(SimProvider, Arc<dyn Clock>), SimError> {
        let wall_now = Timestamp::from_system_time(SystemTime::now());
        let world = with_file(path, |existing| {
            let mut world = match existing {
                Some(world) => world,
                None => {
                    let mut world = World::new(topology, seed, wall_now);
                    world.time_scale = time_scale;
                    world
                }
            };
            check_matches(&world, topology).map_err(|detail| SimError::Unusable {
                path: path.to_path_buf(),
                detail,
            })?;
            if world.health_records.is_empty() {
                // A world saved before it answered DNS: its health records, from the config.
                world.health_records = topology
                    .regions
                    .iter()
                    .map(|r| {
                        (
                            world::dns_name(&topology.dns.health_record(r)),
                            r.name.clone(),
                        )
                    })
                    .collect();
            }
            if (world.time_scale - time_scale).abs() > f64::EPSILON {
                // Re-anchor so the simulated time is continuous under the new scale.
                let now =
                    WallClock::scaled(world.wall_epoch, world.sim_epoch, world.time_scale).now();
                world.wall_epoch = wall_now;
                world.sim_epoch = now;
                world.time_scale = time_scale;
            }
            Ok((Some(world.clone()), world))
        })?;
        let clock: Arc<dyn Clock> = Arc::new(WallClock::scaled(
            world.wall_epoch,
            world.sim_epoch,
            world.time_scale,
        ));
        Ok((
            SimProvider {
                backing: Backing::File(path.to_path_buf()),
                clock: clock.clone(),
                observer: Mutex::new(None),
            },
            clock,
        ))
    }

    /// Reads the world, advanced to now.
    pub fn snapshot(&self) -> Result<World, SimError> {
        self.update(|world| world.clone())
    }

    /// Changes the world (scenario events, `dr sim`), advanced to now first.
    pub fn update<R>(&self, change: impl FnOnce(&mut World) -> R) -> Result<R, SimError> {
        let now = self.clock.now();
        match &self.backing {
            Backing::Memory(world) => {
                let mut world = world
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                world.advance(now);
                Ok(change(&mut world))
            }
            Backing::File(path) => with_file(path, |existing| {
                let mut world = existing.ok_or_else(|| SimError::Unusable {
                    path: path.clone(),
                    detail: "the file disappeared".into(),
                })?;
                let before = world.clone();
                world.advance(now);
                let result = change(&mut world);
                let changed = world != before;
                Ok((changed.then_some(world), result))
            }),
        }
    }

    async fn call<T>(
        &self,
        operation: &str,
        region: &str,
        act: impl FnOnce(&mut World) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let outcome = self.update(|world| match world.take_fault(operation, region) {
            Err(err) => (Duration::ZERO, Err(err)),
            Ok(delay) => (delay, act(world)),
        });
        let (delay, result) = outcome.map_err(|err| ProviderError::Unavailable {
            operation: operation.into(),
            region: region.into(),
            detail: err.to_string(),
        })?;
        if !delay.is_zero() {
            self.clock.sleep(delay).await;
        }
        let observer = self
            .observer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(observer) = observer {
            observer(operation);
        }
        result
    }
}

fn check_matches(world: &World, topology: &Topology) -> Result<(), String> {
    if world.version != world::WORLD_VERSION {
        return Err(format!(
            "it holds world version {}, this dr reads version {}",
            world.version,
            world::WORLD_VERSION
        ));
    }
    for region in &topology.regions {
        if !world.regions.contains_key(&region.name) {
            return Err(format!(
                "it was made for a config without region {}",
                region.name
            ));
        }
    }
    Ok(())
}

/// Runs `body` on the file's world under an exclusive lock; writes the world it returns.
fn with_file<R>(
    path: &Path,
    body: impl FnOnce(Option<World>) -> Result<(Option<World>, R), SimError>,
) -> Result<R, SimError> {
    let io = |detail: String| SimError::Io {
        path: path.to_path_buf(),
        detail,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| io(format!("cannot create its folder: {e}")))?;
    }
    let lock_path = path.with_extension("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            io(format!(
                "cannot open lock file {}: {e}",
                lock_path.display()
            ))
        })?;
    lock.lock()
        .map_err(|e| io(format!("cannot lock {}: {e}", lock_path.display())))?;
    let existing = match std::fs::read(path) {
        Ok(bytes) => {
            Some(
                serde_json::from_slice::<World>(&bytes).map_err(|e| SimError::Unusable {
                    path: path.to_path_buf(),
                    detail: format!("it is not a simulator world ({e})"),
                })?,
            )
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(io(format!("cannot read: {err}"))),
    };
    let (write, result) = body(existing)?;
    if let Some(world) = write {
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(&world).map_err(|e| io(e.to_string()))?;
        let mut file = File::create(&tmp).map_err(|e| io(format!("cannot write: {e}")))?;
        file.write_all(&bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| io(format!("cannot write: {e}")))?;
        std::fs::rename(&tmp, path).map_err(|e| io(format!("cannot replace: {e}")))?;
    }
    drop(lock);
    Ok(result)
}

#[async_trait]
impl Database for SimProvider {
    async fn describe_global_cluster(
        &self,
        region: &RegionName,
        global_cluster_id: &str,
    ) -> Result<GlobalCluster, ProviderError> {
        self.call("DescribeGlobalClusters", region.as_str(), |w| {
            w.describe_global_cluster(region, global_cluster_id)
        })
        .await
    }

    async fn failover_global_cluster(
        &self,
        region: &RegionName,
        global_cluster_id: &str,
        target_db_cluster_id: &str,
        allow_data_loss: bool,
    ) -> Result<(), ProviderError> {
        self.call("FailoverGlobalCluster", region.as_str(), |w| {
            w.promote(
                region,
                global_cluster_id,
                target_db_cluster_id,
                allow_data_loss,
            )
        })
        .await
    }

    async fn switchover_global_cluster(
        &self,
        region: &RegionName,
        global_cluster_id: &str,
        target_db_cluster_id: &str,
    ) -> Result<(), ProviderError> {
        self.call("SwitchoverGlobalCluster", region.as_str(), |w| {
            w.promote(region, global_cluster_id, target_db_cluster_id, false)
        })
        .await
    }
}

#[async_trait]
impl Compute for SimProvider {
    async fn describe_nodegroup(
        &self,
        region: &RegionName,
        cluster: &str,
        nodegroup: &str,
    ) -> Result<NodegroupState, ProviderError> {
        self.call("DescribeNodegroup", region.as_str(), |w| {
            w.describe_nodegroup(region, cluster, nodegroup)
        })
        .await
    }

    async fn update_nodegroup_config(
        &self,
        region: &RegionName,
        cluster: &str,
        nodegroup: &str,
        sizes: Sizes,
        client_request_token: &str,
    ) -> Result<String, ProviderError> {
        self.call("UpdateNodegroupConfig", region.as_str(), |w| {
            w.update_nodegroup(region, cluster, nodegroup, sizes, client_request_token)
        })
        .await
    }

    async fn describe_update(
        &self,
        region: &RegionName,
        cluster: &str,
        nodegroup: &str,
        update_id: &str,
    ) -> Result<UpdateState, ProviderError> {
        self.call("DescribeUpdate", region.as_str(), |w| {
            w.describe_update(region, cluster, nodegroup, update_id)
        })
        .await
    }

    async fn describe_autoscaling_group(
        &self,
        region: &RegionName,
        group: &str,
    ) -> Result<AsgState, ProviderError> {
        self.call("DescribeAutoScalingGroups", region.as_str(), |w| {
            w.describe_asg(region, group)
        })
        .await
    }

    async fn update_autoscaling_group(
        &self,
        region: &RegionName,
        group: &str,
        sizes: Sizes,
    ) -> Result<(), ProviderError> {
        self.call("UpdateAutoScalingGroup", region.as_str(), |w| {
            w.update_asg(region, group, sizes)
        })
        .await
    }
}

#[async_trait]
impl Dns for SimProvider {
    async fn list_records(
        &self,
        hosted_zone_id: &str,
        record_name: &str,
    ) -> Result<Vec<LatencyRecord>, ProviderError> {
        self.call("ListResourceRecordSets", "global", |w| {
            w.list_records(hosted_zone_id, record_name)
        })
        .await
    }

    async fn change_records(
        &self,
        hosted_zone_id: &str,
        changes: &[RecordChange],
    ) -> Result<String, ProviderError> {
        self.call("ChangeResourceRecordSets", "global", |w| {
            w.change_records(hosted_zone_id, changes)
        })
        .await
    }

    async fn get_change(&self, change_id: &str) -> Result<ChangeStatus, ProviderError> {
        self.call("GetChange", "global", |w| w.get_change(change_id))
            .await
    }
}

#[async_trait]
impl HealthChecks for SimProvider {
    async fn checker_report(&self, health_check_id: &str) -> Result<CheckerReport, ProviderError> {
        self.call("GetHealthCheckStatus", "global", |w| {
            w.checker_report(health_check_id)
        })
        .await
    }
}

#[async_trait]
impl Probe for SimProvider {
    async fn probe(&self, region: &RegionName, _url: &str, timeout: Duration) -> ProbeResult {
        match self.update(|w| w.probe(region)) {
            Ok(ProbeResult::Timeout) => {
                // A dark region costs the prober its whole timeout.
                self.clock.sleep(timeout).await;
                ProbeResult::Timeout
            }
            Ok(result) => result,
            Err(_) => ProbeResult::Timeout,
        }
    }
}

#[async_trait]
impl DnsAnswers for SimProvider {
    async fn answers(&self, name: &str, rtype: DnsType) -> Result<Vec<String>, ProviderError> {
        self.call("DNS query", "route53-data-plane", |w| {
            w.dns_answers(name, rtype)
        })
        .await
    }
}

#[async_trait]
impl ReplicationLag for SimProvider {
    async fn lag(
        &self,
        region: &RegionName,
        db_cluster_id: &str,
    ) -> Result<Option<Duration>, ProviderError> {
        self.call("GetMetricData", region.as_str(), |w| {
            w.lag(region, db_cluster_id)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[tokio::test]
    async fn a_state_file_world_persists_between_openings() {
        let dir = tempfile::tempdir().unwrap();
        let config = config::parse(
            include_str!("../../../config/example.toml"),
            &dir.path().join("dr.toml"),
        )
        .unwrap();
        let path = dir.path().join("world.json");
        let (sim, _) = SimProvider::open_file(&path, &config.topology, 1, 60.0).unwrap();
        sim.update(|w| w.set_outage(&"us-east-1".into(), Some(OutageKind::App)))
            .unwrap()
            .unwrap();
        drop(sim);
        let (again, _) = SimProvider::open_file(&path, &config.topology, 1, 60.0).unwrap();
        let result = again
            .probe(&"us-east-1".into(), "unused", Duration::from_secs(1))
            .await;
        assert_eq!(result, ProbeResult::Status { code: 503 });
    }

    #[test]
    fn a_damaged_state_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config = config::parse(
            include_str!("../../../config/example.toml"),
            &dir.path().join("dr.toml"),
        )
        .unwrap();
        let path = dir.path().join("world.json");
        std::fs::write(&path, b"{ not json").unwrap();
        let err = SimProvider::open_file(&path, &config.topology, 1, 60.0)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("not a simulator world"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{ not json");
    }
}
