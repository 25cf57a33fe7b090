//! Identifier newtypes shared by every module: region names, run ids and step names.
//!
//! Bare `String`s never cross a module boundary as ids; these types do.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string as this id.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_string())
            }
        }
    };
}

string_id!(
    /// An AWS region name such as `us-east-1`. Regions are data: no code names one.
    RegionName
);
string_id!(
    /// The id of one failover or switchover run, unique in its store.
    RunId
);

/// The steps a plan can hold. The set is closed: a new step is a new variant and a new executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepName {
    /// Read-only checks of the target before any change.
    Preflight,
    /// Makes the target's database cluster the global writer.
    PromoteDb,
    /// Scales the target's node groups and Auto Scaling groups to their failover sizes.
    ScaleTarget,
    /// Changes the latency records so that only the serving regions answer.
    RepointDns,
    /// Confirms the target serves, holds the writer and is in DNS.
    Verify,
}

impl StepName {
    /// Every step, in plan order.
    pub const ALL: [StepName; 5] = [
        StepName::Preflight,
        StepName::PromoteDb,
        StepName::ScaleTarget,
        StepName::RepointDns,
        StepName::Verify,
    ];

    /// The step's name as written in logs, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Preflight => "preflight",
            StepName::PromoteDb => "promote-db",
            StepName::ScaleTarget => "scale-target",
            StepName::RepointDns => "repoint-dns",
            StepName::Verify => "verify",
        }
    }

    /// Parses a step name as the CLI and scenario files write it.
    pub fn parse(text: &str) -> Option<StepName> {
        StepName::ALL.into_iter().find(|step| step.as_str() == text)
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who did something: an operator, the daemon, a drill, or the engine itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(String);

impl Actor {
    /// An actor with the given name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The engine acting on its own account (step transitions).
    pub fn engine() -> Self {
        Self("engine".to_string())
    }

    /// The actor's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_round_trip_through_text_and_serde() {
        for step in StepName::ALL {
            assert_eq!(StepName::parse(step.as_str()), Some(step));
            let json = serde_json::to_string(&step).unwrap();
            assert_eq!(json, format!("\"{}\"", step.as_str()));
        }
        assert_eq!(StepName::parse("promote"), None);
    }
}
