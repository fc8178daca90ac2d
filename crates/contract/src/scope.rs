//! What a token may do: a read or a write scope per dataset, as OAuth 2.0
//! scopes of the API's resource server (`pipeline/events.read`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The resource server whose scopes the API checks: a scope in a token is
/// `<RESOURCE_SERVER>/<dataset>.<action>`.
pub const RESOURCE_SERVER: &str = "pipeline";

/// What a scope allows on its dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read records and the status of its batches.
    Read,
    /// Send batches (inline or uploaded) and read their status.
    Write,
}

impl Action {
    pub const ALL: [Action; 2] = [Action::Read, Action::Write];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
        }
    }
}

/// One scope: an action on a dataset, written `<dataset>.<action>` in the
/// spec and `pipeline/<dataset>.<action>` in tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub dataset: String,
    pub action: Action,
}

impl Scope {
    pub fn new(dataset: &str, action: Action) -> Scope {
        Scope {
            dataset: dataset.to_string(),
            action,
        }
    }

    /// Every scope over these datasets: a read and a write scope each.
    pub fn all<'a>(datasets: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        datasets
            .into_iter()
            .flat_map(|d| Action::ALL.map(|a| Scope::new(d, a)))
            .collect()
    }

    /// What the scope allows, for people (the user pool's scope
    /// descriptions and the API document's alike).
    pub fn description(&self) -> String {
        let what = match self.action {
            Action::Read => "Read the records and batches of",
            Action::Write => "Send batches to",
        };
        format!("{what} {}", self.dataset)
    }

    /// The scope as tokens carry it: `pipeline/<dataset>.<action>`.
    pub fn qualified(&self) -> String {
        format!("{RESOURCE_SERVER}/{self}")
    }

    /// The scopes of a token's `scope` claim (space-separated, qualified);
    /// those of other resource servers, or not of this form, are left out.
    pub fn from_claim(claim: &str) -> Vec<Scope> {
        claim
            .split_whitespace()
            .filter_map(|s| s.strip_prefix(RESOURCE_SERVER)?.strip_prefix('/'))
            .filter_map(|s| s.parse().ok())
            .collect()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.dataset, self.action.as_str())
    }
}

/// Why a text is not a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeError {
    /// No `.` between a dataset and an action.
    NoAction,
    /// The action is neither `read` nor `write`.
    UnknownAction(String),
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::NoAction => f.write_str("a scope is `<dataset>.read` or `<dataset>.write`"),
            ScopeError::UnknownAction(a) => {
                write!(
                    f,
                    "`{a}` is not an action: the actions are `read` and `write`"
                )
            }
        }
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Scope, ScopeError> {
        let (dataset, action) = s.rsplit_once('.').ok_or(ScopeError::NoAction)?;
        if dataset.is_empty() {
            return Err(ScopeError::NoAction);
        }
        let action = match action {
            "read" => Action::Read,
            "write" => Action::Write,
            other => return Err(ScopeError::UnknownAction(other.to_string())),
        };
        Ok(Scope::new(dataset, action))
    }
}

/// What a caller may do, as the API's authorizer established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Everything: the API checked a key or a signature, which carry no
    /// scopes.
    Any,
    /// Only what these scopes allow (a token's).
    Scopes(Vec<Scope>),
}

impl Access {
    /// Whether the caller may take `action` on `dataset`.
    pub fn allows(&self, dataset: &str, action: Action) -> bool {
        match self {
            Access::Any => true,
            Access::Scopes(scopes) => scopes
                .iter()
                .any(|s| s.dataset == dataset && s.action == action),
        }
    }

    /// Whether the caller may read the status of a batch of `dataset`:
    /// with either of its scopes (who sends a batch follows its load).
    pub fn sees_batches_of(&self, dataset: &str) -> bool {
        self.allows(dataset, Action::Read) || self.allows(dataset, Action::Write)
    }

    /// The scopes, as a token would list them, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Access::Any => "every scope".into(),
            Access::Scopes(s) if s.is_empty() => "no scope of this API".into(),
            Access::Scopes(s) => s.iter().map(Scope::qualified).collect::<Vec<_>>().join(" "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_and_write_their_forms() {
        let scope: Scope = "events.write".parse().expect("scope");
        assert_eq!(scope, Scope::new("events", Action::Write));
        assert_eq!(scope.qualified(), "pipeline/events.write");
        assert_eq!("events".parse::<Scope>(), Err(ScopeError::NoAction));
        assert_eq!(
            "events.delete".parse::<Scope>(),
            Err(ScopeError::UnknownAction("delete".into()))
        );
        assert_eq!(
            Scope::from_claim("pipeline/events.read other/x.read pipeline/trips.write email"),
            vec![
                Scope::new("events", Action::Read),
                Scope::new("trips", Action::Write)
            ]
        );
    }

    #[test]
    fn access_allows_only_its_scopes() {
        let access = Access::Scopes(Scope::from_claim("pipeline/events.read"));
        assert!(access.allows("events", Action::Read));
        assert!(!access.allows("events", Action::Write));
        assert!(!access.allows("trips", Action::Read));
        assert!(access.sees_batches_of("events"));
        assert!(!access.sees_batches_of("trips"));
        assert!(Access::Any.allows("trips", Action::Write));
    }
}

/// The scopes an operation takes, as API Gateway's authorizer checks them:
/// a token passes with any one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Required {
    /// A dataset's route: this one scope.
    One(Scope),
    /// A route of batches or the API as a whole: any scope of this action
    /// (any action with `None`) of any dataset; the handlers check the
    /// batch's own dataset.
    AnyOf(Option<Action>),
}

impl Required {
    /// What the route with these path segments (after the stage) takes.
    pub fn of(parts: &[&str]) -> Required {
        match parts {
            ["v1", "datasets", dataset, "records"] => {
                Required::One(Scope::new(dataset, Action::Read))
            }
            ["v1", "datasets", dataset, _] => Required::One(Scope::new(dataset, Action::Write)),
            ["v1", "batches", _, _] => Required::AnyOf(Some(Action::Write)),
            _ => Required::AnyOf(None),
        }
    }

    /// The scopes, listed for the API document, over these datasets.
    pub fn list<'a>(&self, datasets: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        match self {
            Required::One(scope) => vec![scope.clone()],
            Required::AnyOf(action) => Scope::all(datasets)
                .into_iter()
                .filter(|s| action.is_none_or(|a| s.action == a))
                .collect(),
        }
    }

    /// Whether a token with `scopes` passes.
    pub fn met_by(&self, scopes: &[Scope]) -> bool {
        match self {
            Required::One(scope) => scopes.contains(scope),
            Required::AnyOf(action) => scopes.iter().any(|s| action.is_none_or(|a| s.action == a)),
        }
    }
}
