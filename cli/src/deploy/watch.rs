//! Which versions the gate alarms watch, as the monitoring stack's gate
//! version parameters say (`IngestGateVersion`, ...): a rollout points them
//! at its new versions and back at every version when it ends.
//!
//! The change is a parameter update of the deployed template
//! (`UsePreviousTemplate`): a `rollout promote` run from a checkout whose
//! spec moved on must change the alarms' version and nothing else.

use super::Session;
use super::cfn::TemplateSource;
use super::engine::{Event, Prompt, Reporter, StackPlan, deploy_stack};
use crate::rollout::{CallError, Watch};
use crate::spec::model::FunctionId;
use crate::synth::StackKind;
use crate::synth::context::gate_version_parameter;

/// The gate alarms of a deployed environment. The stack update's own
/// events are not shown: the rollout says where the gates point, and a
/// failure carries its root causes.
pub struct GateVersions<'a> {
    pub session: &'a Session,
}

/// Takes the engine's events and says yes (the update is the rollout's).
struct Silent;

impl Prompt for Silent {
    fn confirm(&self, _: &str) -> bool {
        true
    }
}

impl Reporter for Silent {
    fn report(&self, _: &Event) {}
}

impl Watch for GateVersions<'_> {
    async fn watch(&self, versions: &[(FunctionId, String)]) -> Result<(), CallError> {
        let manifest = &self.session.synthesis.manifest;
        let Some(m) = manifest
            .stacks
            .iter()
            .find(|m| m.id == StackKind::Monitoring.id())
        else {
            return Ok(());
        };
        let failed = |e: crate::Error| CallError(e.to_string());
        // No monitoring stack, no gate alarms of ours to point.
        let Some(stack) = self.session.stack(&m.name).await.map_err(failed)? else {
            return Ok(());
        };
        let mut parameters = stack.parameters.clone();
        for (function, version) in versions {
            // A stack deployed before the parameter existed keeps its alarms.
            if let Some(value) = parameters.get_mut(&gate_version_parameter(*function)) {
                value.clone_from(version);
            }
        }
        if parameters == stack.parameters {
            return Ok(());
        }
        let plan = StackPlan {
            name: m.name.clone(),
            template: TemplateSource::Previous,
            parameters,
            tags: manifest.tags.clone(),
            resources: Vec::new(),
        };
        let opts = super::options(true, false);
        deploy_stack(&self.session.cfn, &plan, &opts, &Silent, &Silent)
            .await
            .map_err(|e| CallError(crate::Error::from(e).to_string()))?;
        Ok(())
    }
}
