//! Clocks: wall time, scaled simulator time, and a drill's virtual time.
//!
//! Everything that waits or stamps a time goes through `Clock`, so one engine runs in real
//! time against AWS, in scaled time against the simulator's state file, and in virtual time
//! (tokio's paused clock) in drills and tests.

use crate::core::time::Timestamp;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

/// A source of `now` and of waits measured in the same time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Waits `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// How many seconds of this clock pass per real second (1 but for a sped-up simulator).
    fn rate(&self) -> f64 {
        1.0
    }
}

/// Wall time, optionally sped up: `now = sim_epoch + (wall_now - wall_epoch) * scale`.
/// With scale 1 and equal epochs it is the system clock. Processes that share the epochs agree
/// on the time, which is how the simulator's state file keeps one clock across commands.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    wall_epoch: Timestamp,
    sim_epoch: Timestamp,
    scale: f64,
}

impl WallClock {
    /// The system clock.
    pub fn system() -> WallClock {
        let now = Timestamp::from_system_time(SystemTime::now());
        WallClock {
            wall_epoch: now,
            sim_epoch: now,
            scale: 1.0,
        }
    }

    /// A scaled clock that read `sim_epoch` at wall time `wall_epoch`.
    pub fn scaled(wall_epoch: Timestamp, sim_epoch: Timestamp, scale: f64) -> WallClock {
        WallClock {
            wall_epoch,
            sim_epoch,
            scale,
        }
    }
}

impl Clock for WallClock {
    fn rate(&self) -> f64 {
        self.scale
    }

    fn now(&self) -> Timestamp {
        let wall = Timestamp::from_system_time(SystemTime::now());
        let elapsed = wall.millis().saturating_sub(self.wall_epoch.millis()) as f64;
        Timestamp(self.sim_epoch.millis() + (elapsed * self.scale) as i64)
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let wall = duration.div_f64(self.scale);
        Box::pin(tokio::time::sleep(wall))
    }
}

/// Time that moves only with tokio's clock. In a runtime started paused, idle time jumps
/// straight to the next timer, so a 40-minute drill runs in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct VirtualClock {
    origin: tokio::time::Instant,
    start: Timestamp,
}

impl VirtualClock {
    /// A clock that reads `start` now.
    pub fn starting_at(start: Timestamp) -> VirtualClock {
        VirtualClock {
            origin: tokio::time::Instant::now(),
            start,
        }
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        self.start.plus(self.origin.elapsed())
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn virtual_time_moves_only_with_sleeps() {
        let clock = VirtualClock::starting_at(Timestamp(1_000));
        assert_eq!(clock.now(), Timestamp(1_000));
        clock.sleep(Duration::from_secs(600)).await;
        assert_eq!(clock.now(), Timestamp(601_000));
    }

    #[test]
    fn a_scaled_clock_runs_faster_than_the_wall() {
        let wall_now = Timestamp::from_system_time(SystemTime::now());
        let clock = WallClock::scaled(Timestamp(wall_now.millis() - 1_000), Timestamp(0), 60.0);
        let now = clock.now().millis();
        assert!((60_000..70_000).contains(&now), "{now}");
    }
}
