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
    /// What each new version must serve during a bake for the gates'
    /// verdict to count.
    pub min_invocations: MinInvocations,
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

    /// Saves the state if no other process wrote it since it was read;
    /// `false` when one did.
    async fn save(&self, state: &mut State) -> Result<bool, CallError> {
        state.updated_at = self.clock.now().to_rfc3339();
        self.store.save(state).await
    }

    /// Reads the stored record again: when another process wrote it since
    /// (a promote or an abort), traffic is routed as it says and `state`
    /// becomes it; `Some(outcome)` when that ended the rollout.
    async fn reread(&self, state: &mut State) -> Result<Option<Outcome>, CallError> {
        let Some(stored) = self.store.load(&state.environment).await? else {
            return Ok(None);
        };
        if stored.tag == state.tag {
            return Ok(None);
        }
        // Where the other process put traffic; a shift of ours may have
        // come after its own.
        self.shift(&stored.targets, stored.percent()).await?;
        for f in &stored.finished {
            self.shift(std::slice::from_ref(&f.target), f.percent)
                .await?;
        }
        *state = stored;
        Ok(match state.phase {
            Phase::InProgress => None,
            phase => Some(Outcome::Ended(phase)),
        })
    }

    /// Saves the state; when another process wrote the record since, takes
    /// that record: `Some(outcome)` when it ended the rollout, else (it
    /// finished some functions early) this step and phase are saved on it.
    async fn commit(&self, state: &mut State) -> Result<Option<Outcome>, CallError> {
        for _ in 0..3 {
            if self.save(state).await? {
                return Ok(None);
            }
            let (step, phase, alarms) = (state.step, state.phase, state.alarms.clone());
            if let Some(ended) = self.reread(state).await? {
                return Ok(Some(ended));
            }
            state.step = step;
            state.phase = phase;
            state.alarms = alarms;
        }
        Err(CallError(
            "the rollout's state kept changing while it was saved; run the command again".into(),
        ))
    }

    /// The gate alarms pointed at the targets' new versions (each function's
    /// `-errors` and `-duration`) start from `INSUFFICIENT_DATA`: the state
    /// they kept is the previous version's, which would roll back a healthy
    /// canary (or pass a broken one) until CloudWatch evaluates them again.
    async fn reset_repointed(&self, targets: &[Target]) -> Result<(), CallError> {
        let repointed: Vec<String> = self
            .alarms
            .iter()
            .filter(|name| targets.iter().any(|t| repointed(name, t.function)))
            .cloned()
            .collect();
        if repointed.is_empty() {
            return Ok(());
        }
        let versions: Vec<String> = targets
            .iter()
            .map(|t| format!("{} {}", t.function, t.to))
            .collect();
        self.gates
            .reset(
                &repointed,
                &format!(
                    "now watching the new version alone: {}",
                    versions.join(", ")
                ),
            )
            .await
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
    /// until the rollout ends, either way. Each step is recorded before its
    /// traffic moves, and the record is read again after the shift and at
    /// every poll of a bake: a promote or an abort by another process holds.
    pub async fn run(&self, state: &mut State) -> Result<Outcome, CallError> {
        self.check_gates().await?;
        let bakes = state.steps.iter().any(|s| s.bake_seconds > 0);
        if bakes {
            self.watch(&state.targets, true).await?;
            self.reset_repointed(&state.targets).await?;
        }
        // Every gate is read before the first shift: one in ALARM (the API's
        // errors, an external alarm) judges the state before the rollout,
        // which no traffic should move into.
        if state.step == 0 {
            let firing = self.firing().await?;
            if !firing.is_empty() {
                if bakes {
                    self.watch(&state.targets, false).await?;
                }
                return Ok(Outcome::Blocked(firing));
            }
        }
        let outcome = self.steps(state).await?;
        if bakes {
            self.watch(&state.targets, false).await?;
        }
        Ok(outcome)
    }

    async fn steps(&self, state: &mut State) -> Result<Outcome, CallError> {
        while state.step < state.steps.len() {
            if let Some(ended) = self.commit(state).await? {
                return Ok(ended);
            }
            let step = state.steps[state.step];
            self.shift(&state.targets, step.percent).await?;
            if let Some(ended) = self.reread(state).await? {
                return Ok(ended);
            }
            self.reporter.report(&Event::Shifted {
                step: state.step,
                steps: state.steps.len(),
                percent: step.percent,
                targets: state.targets.clone(),
            });
            if let Some(outcome) = self.bake(state, step).await? {
                return Ok(outcome);
            }
            if state.step + 1 == state.steps.len() {
                break;
            }
            state.step += 1;
        }
        state.phase = Phase::Promoted;
        if let Some(ended) = self.commit(state).await? {
            return Ok(ended);
        }
        self.reporter.report(&Event::Promoted {
            targets: state.targets.clone(),
        });
        Ok(Outcome::Promoted)
    }

    /// Watches the gates for a step's bake: `Some(outcome)` when an alarm
    /// sent traffic back or another process ended the rollout.
    async fn bake(&self, state: &mut State, step: Step) -> Result<Option<Outcome>, CallError> {
        let start = self.clock.now();
        let end = start + chrono::Duration::seconds(step.bake_seconds as i64);
        loop {
            let firing = self.firing().await?;
            if !firing.is_empty() {
                return self.roll_back(state, firing).await.map(Some);
            }
            let left = (end - self.clock.now()).num_seconds().max(0) as u64;
            if left == 0 {
                let unjudged = self.unjudged(state, step, start).await?;
                if unjudged.is_empty() {
                    return Ok(None);
                }
                return self.roll_back(state, unjudged).await.map(Some);
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
            if let Some(ended) = self.reread(state).await? {
                return Ok(Some(ended));
            }
        }
    }

    /// Sends all traffic back to the previous versions for `firing`.
    async fn roll_back(
        &self,
        state: &mut State,
        firing: Vec<Firing>,
    ) -> Result<Outcome, CallError> {
        self.shift(&state.targets, 0).await?;
        state.phase = Phase::RolledBack;
        state.alarms = firing.clone();
        if let Some(ended) = self.commit(state).await? {
            return Ok(ended);
        }
        self.reporter.report(&Event::RolledBack {
            alarms: firing.clone(),
        });
        Ok(Outcome::RolledBack(firing))
    }

    /// The new versions that served fewer invocations during a bake (from
    /// `start`) than `rollout.min_invocations` asks: the gates, which saw
    /// too little of them, cannot have judged them. A step that gives them
    /// all the traffic is not judged so.
    async fn unjudged(
        &self,
        state: &State,
        step: Step,
        start: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Firing>, CallError> {
        let mut unjudged = Vec::new();
        if step.percent >= 100 {
            return Ok(unjudged);
        }
        for t in &state.targets {
            let wanted = self.min_invocations.of(t.function);
            if wanted == 0 || state.finished.iter().any(|f| f.target == *t) {
                continue;
            }
            let served = self.gates.invocations(&t.name, &t.to, start).await?;
            if served < u64::from(wanted) {
                unjudged.push(Firing {
                    name: format!("rollout.min_invocations.{}", t.function),
                    reason: format!(
                        "{} version {} served {served} invocation{} in its {} s bake at {}%, fewer than the {wanted} the gates need to judge it",
                        t.function,
                        t.to,
                        if served == 1 { "" } else { "s" },
                        step.bake_seconds,
                        step.percent
                    ),
                });
            }
        }
        Ok(unjudged)
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

    /// Records the finish first, conditionally (another process may be
    /// rolling out: on a conflict, the record is read again and the finish
    /// applied to it), then moves the traffic; a deploy that is rolling out
    /// finds the record changed and follows it.
    async fn finish(
        &self,
        state: &mut State,
        function: Option<FunctionId>,
        percent: u8,
    ) -> Result<(), CallError> {
        let chosen = loop {
            let (next, chosen) = finished(state, function, percent)?;
            let mut next = next;
            if self.save(&mut next).await? {
                *state = next;
                break chosen;
            }
            match self.store.load(&state.environment).await? {
                Some(stored) if stored.phase == Phase::InProgress => *state = stored,
                Some(stored) => {
                    return Err(CallError(format!(
                        "the rollout ended meanwhile ({})",
                        phase_name(stored.phase)
                    )));
                }
                None => return Err(CallError("the rollout's state is gone".into())),
            }
        };
        self.shift(&chosen, percent).await?;
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

/// The state once `function`'s targets (all, without one) are finished at
/// `percent`, and those targets.
pub(super) fn finished(
    state: &State,
    function: Option<FunctionId>,
    percent: u8,
) -> Result<(State, Vec<Target>), CallError> {
    let (chosen, rest): (Vec<Target>, Vec<Target>) = state
        .targets
        .iter()
        .cloned()
        .partition(|t| function.is_none_or(|f| t.function == f));
    if chosen.is_empty() {
        let taking_part: Vec<&str> = state.targets.iter().map(|t| t.function.as_str()).collect();
        return Err(CallError(format!(
            "`{}` takes no part in the rollout; its functions are: {}",
            function.map_or("", FunctionId::as_str),
            taking_part.join(", ")
        )));
    }
    let mut next = state.clone();
    if rest.is_empty() {
        next.phase = if percent == 100 {
            next.step = next.steps.len().saturating_sub(1);
            Phase::Promoted
        } else {
            Phase::Aborted
        };
    } else {
        next.targets = rest;
        next.finished.extend(chosen.iter().map(|target| Finished {
            target: target.clone(),
            percent,
        }));
    }
    Ok((next, chosen))
}

/// Whether a gate alarm watches one version of `function` during a rollout
/// (the monitoring stack's `<fn>-errors` and `<fn>-duration`).
fn repointed(name: &str, function: FunctionId) -> bool {
    ["errors", "duration"]
        .iter()
        .any(|kind| name.ends_with(&format!("-{function}-{kind}")))
}

/// A phase as the state file writes it.
fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::InProgress => "in progress",
        Phase::Promoted => "promoted",
        Phase::RolledBack => "rolled back",
        Phase::Aborted => "aborted",
    }
}
