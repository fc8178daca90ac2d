//! Running a rollout: traffic step by step under the gates, and finishing
//! one early (promote, abort).

use super::*;

/// Everything a rollout runs with.
pub struct Rollouts<'a, A, G, W, S, C, R> {
    pub aliases: &'a A,
    pub gates: &'a G,
    pub watch: &'a W,
    pub store: &'a S,
    pub clock: &'a C,
    pub reporter: &'a R,
    /// The gate alarms' names.
    pub alarms: Vec<String>,
    pub poll: Duration,
}

impl<A: Aliases, G: Gates, W: Watch, S: Store, C: Clock, R: Reporter>
    Rollouts<'_, A, G, W, S, C, R>
{
    /// Gives the new versions `percent` of the traffic.
    async fn shift(&self, targets: &[Target], percent: u8) -> Result<(), CallError> {
        for t in targets {
            match percent {
                0 => self.aliases.route(&t.name, &t.from, None).await?,
                100 => self.aliases.route(&t.name, &t.to, None).await?,
                p => {
                    self.aliases
                        .route(&t.name, &t.from, Some((&t.to, f64::from(p) / 100.0)))
                        .await?
                }
            }
        }
        Ok(())
    }

    /// Points the targets' gate alarms at their new versions, or (with
    /// `to_new` false) back at every version. Only the first can fail the
    /// rollout: traffic must not move under gates that watch the wrong
    /// version, while gates left on a version that serves everything or
    /// nothing mislead no one until the next deploy resets them.
    async fn watch(&self, targets: &[Target], to_new: bool) -> Result<(), CallError> {
        let functions: Vec<(FunctionId, String)> = targets
            .iter()
            .map(|t| {
                let version = if to_new { t.to.as_str() } else { ALL_VERSIONS };
                (t.function, version.to_string())
            })
            .collect();
        let error = match self.watch.watch(&functions).await {
            Ok(()) => None,
            Err(e) if to_new => return Err(e),
            Err(e) => Some(e.0),
        };
        self.reporter.report(&Event::Gates { functions, error });
        Ok(())
    }

    async fn save(&self, state: &mut State) -> Result<(), CallError> {
        state.updated_at = self.clock.now().to_rfc3339();
        self.store.save(state).await
    }

    /// Checks that every gate alarm exists, before any traffic moves: a
    /// name DescribeAlarms does not know is silently left out of its answer.
    pub async fn check_gates(&self) -> Result<(), CallError> {
        if self.alarms.is_empty() {
            return Ok(());
        }
        let found = self.gates.describe(&self.alarms).await?;
        match missing(&self.alarms, &found)[..] {
            [] => Ok(()),
            ref gone => Err(missing_error(gone)),
        }
    }

    /// The gate alarms that send traffic back: those in ALARM, and those
    /// that no longer exist (the gate cannot be read).
    async fn firing(&self) -> Result<Vec<Firing>, CallError> {
        if self.alarms.is_empty() {
            return Ok(vec![]);
        }
        let found = self.gates.describe(&self.alarms).await?;
        Ok(found
            .iter()
            .filter(|a| a.state == "ALARM")
            .map(|a| Firing {
                name: a.name.clone(),
                reason: a.reason.clone(),
            })
            .chain(
                missing(&self.alarms, &found)
                    .into_iter()
                    .map(|name| Firing {
                        name,
                        reason: "the alarm no longer exists, so the gate cannot be read".into(),
                    }),
            )
            .collect())
    }

    /// Runs (or resumes) a rollout from its state's step to the end. The
    /// gate alarms must all exist, else no traffic moves. When a step bakes,
    /// the gates watch the new versions alone from before the first shift
    /// until the rollout ends, either way.
    pub async fn run(&self, state: &mut State) -> Result<Outcome, CallError> {
        self.check_gates().await?;
        let bakes = state.steps.iter().any(|s| s.bake_seconds > 0);
        if bakes {
            self.watch(&state.targets, true).await?;
        }
        while state.step < state.steps.len() {
            let step = state.steps[state.step];
            self.shift(&state.targets, step.percent).await?;
            self.save(state).await?;
            self.reporter.report(&Event::Shifted {
                step: state.step,
                steps: state.steps.len(),
                percent: step.percent,
                targets: state.targets.clone(),
            });
            let end = self.clock.now() + chrono::Duration::seconds(step.bake_seconds as i64);
            loop {
                let firing = self.firing().await?;
                if !firing.is_empty() {
                    self.shift(&state.targets, 0).await?;
                    state.phase = Phase::RolledBack;
                    state.alarms = firing.clone();
                    self.save(state).await?;
                    self.reporter.report(&Event::RolledBack {
                        alarms: firing.clone(),
                    });
                    if bakes {
                        self.watch(&state.targets, false).await?;
                    }
                    return Ok(Outcome::RolledBack(firing));
                }
                let left = (end - self.clock.now()).num_seconds().max(0) as u64;
                if left == 0 {
                    break;
                }
                self.reporter.report(&Event::Baking {
                    step: state.step,
                    percent: step.percent,
                    remaining_seconds: left,
                    alarms: self.alarms.len(),
                });
                self.clock
                    .sleep(self.poll.min(Duration::from_secs(left)))
                    .await;
            }
            if state.step + 1 == state.steps.len() {
                break;
            }
            state.step += 1;
        }
        state.phase = Phase::Promoted;
        self.save(state).await?;
        self.reporter.report(&Event::Promoted {
            targets: state.targets.clone(),
        });
        if bakes {
            self.watch(&state.targets, false).await?;
        }
        Ok(Outcome::Promoted)
    }

    /// Finishes a rollout at once: all traffic to the new versions (of one
    /// function only, with `function`: the others' rollout goes on).
    pub async fn promote(
        &self,
        state: &mut State,
        function: Option<FunctionId>,
    ) -> Result<(), CallError> {
        self.finish(state, function, 100).await
    }

    /// Ends a rollout at once: all traffic back to the previous versions (of
    /// one function only, with `function`).
    pub async fn abort(
        &self,
        state: &mut State,
        function: Option<FunctionId>,
    ) -> Result<(), CallError> {
        self.finish(state, function, 0).await
    }

    async fn finish(
        &self,
        state: &mut State,
        function: Option<FunctionId>,
        percent: u8,
    ) -> Result<(), CallError> {
        let (chosen, rest): (Vec<Target>, Vec<Target>) = state
            .targets
            .iter()
            .cloned()
            .partition(|t| function.is_none_or(|f| t.function == f));
        if chosen.is_empty() {
            let taking_part: Vec<&str> =
                state.targets.iter().map(|t| t.function.as_str()).collect();
            return Err(CallError(format!(
                "`{}` takes no part in the rollout; its functions are: {}",
                function.map_or("", FunctionId::as_str),
                taking_part.join(", ")
            )));
        }
        self.shift(&chosen, percent).await?;
        if rest.is_empty() {
            state.phase = if percent == 100 {
                state.step = state.steps.len().saturating_sub(1);
                Phase::Promoted
            } else {
                Phase::Aborted
            };
        } else {
            state.targets = rest;
        }
        self.save(state).await?;
        self.reporter.report(&if percent == 100 {
            Event::Promoted {
                targets: chosen.clone(),
            }
        } else {
            Event::Aborted {
                targets: chosen.clone(),
            }
        });
        self.watch(&chosen, false).await
    }
}
