//! What a rollout tells the user as it happens, and who receives it.

use super::*;

/// What a rollout tells the user, as it happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Traffic moved: the new versions take `percent`.
    Shifted {
        step: usize,
        steps: usize,
        percent: u8,
        targets: Vec<Target>,
    },
    /// A poll of the gates during a bake.
    Baking {
        step: usize,
        percent: u8,
        remaining_seconds: u64,
        alarms: usize,
    },
    /// An alarm fired: all traffic went back.
    RolledBack {
        alarms: Vec<Firing>,
    },
    Promoted {
        targets: Vec<Target>,
    },
    Aborted {
        targets: Vec<Target>,
    },
    /// The gate alarms of `functions` watch `version` alone, or every
    /// version when it is [`ALL_VERSIONS`]; `error` when they could not be
    /// pointed back (the next deploy does it).
    Gates {
        functions: Vec<(FunctionId, String)>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let versions = |targets: &[Target]| {
            targets
                .iter()
                .map(|t| format!("{} {}→{}", t.function, t.from, t.to))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Event::Shifted {
                step,
                steps,
                percent,
                targets,
            } => writeln!(
                f,
                "rollout step {}/{steps}: new versions take {percent}% ({})",
                step + 1,
                versions(targets)
            ),
            Event::Baking {
                step,
                percent,
                remaining_seconds,
                alarms,
            } => writeln!(
                f,
                "rollout step {}: {percent}% on the new versions, {remaining_seconds} s left, {alarms} gate alarms OK",
                step + 1
            ),
            Event::RolledBack { alarms } => {
                writeln!(
                    f,
                    "rollout rolled back: all traffic is on the previous versions"
                )?;
                for a in alarms {
                    writeln!(f, "  {} is in ALARM: {}", a.name, a.reason)?;
                }
                Ok(())
            }
            Event::Promoted { targets } => {
                writeln!(f, "rollout promoted: {}", versions(targets))
            }
            Event::Aborted { targets } => writeln!(
                f,
                "rollout aborted: all traffic is on the previous versions ({})",
                versions(targets)
            ),
            Event::Gates { functions, error } => {
                let names = || {
                    functions
                        .iter()
                        .map(|(f, _)| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                match error {
                    Some(e) => writeln!(
                        f,
                        "the gate alarms of {} still watch one version ({e}); the next deploy points them at every version",
                        names()
                    ),
                    None if functions.iter().all(|(_, v)| v == ALL_VERSIONS) => {
                        writeln!(f, "gate alarms watch every version of {}", names())
                    }
                    None => writeln!(
                        f,
                        "gate alarms watch the new versions alone: {}",
                        functions
                            .iter()
                            .map(|(f, v)| format!("{f} {v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
        }
    }
}

/// Receives a rollout's events.
pub trait Reporter {
    fn report(&self, event: &Event);
}
