//! Reserved concurrency against the account's: the spec's reservations must
//! fit in what the account's Lambda concurrency leaves, or the app stack
//! would fail half way. Checked before any stack moves.

use crate::Error;
use crate::aws::aws_error;
use crate::deploy::cfn::Stack;
use crate::deploy::{Session, function_key};

/// Lambda keeps at least this many concurrent executions unreserved, for
/// the functions without a reservation ("Configuring reserved concurrency
/// for a function", AWS Lambda Developer Guide; PutFunctionConcurrency).
pub const MIN_UNRESERVED: u64 = 100;

/// The account's concurrency in a region, as GetAccountSettings reports it
/// (`AccountLimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    /// `ConcurrentExecutions`: the quota "Concurrent executions".
    pub limit: u64,
    /// `UnreservedConcurrentExecutions`: the limit less every function's
    /// reservation.
    pub unreserved: u64,
}

/// Why reservations do not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    /// What functions outside the environment reserve.
    pub others: u64,
    /// The most the environment can reserve.
    pub most: u64,
    /// The quota that would take the reservations.
    pub needed: u64,
}

/// Whether the environment can reserve `requested` in all, given what its
/// functions reserve now (`own_now`, counted in the account's reservations
/// and freed by the deploy).
pub fn shortfall(account: Account, own_now: u64, requested: u64) -> Option<Shortfall> {
    let others = account
        .limit
        .saturating_sub(account.unreserved)
        .saturating_sub(own_now);
    let most = account
        .limit
        .saturating_sub(MIN_UNRESERVED)
        .saturating_sub(others);
    (requested > most).then_some(Shortfall {
        others,
        most,
        needed: others + requested + MIN_UNRESERVED,
    })
}

/// Refuses (exit 2, nothing changed) a spec whose reservations the
/// account's concurrency cannot take; `app` is the app stack as deployed,
/// whose functions' reservations the deploy replaces.
pub async fn check_concurrency(session: &Session, app: Option<&Stack>) -> Result<(), Error> {
    let reserving: Vec<(&str, u64)> = session
        .env
        .spec
        .functions
        .all()
        .iter()
        .filter_map(|(id, f)| f.reserved_concurrency.map(|r| (id.as_str(), u64::from(r))))
        .collect();
    let requested: u64 = reserving.iter().map(|(_, r)| r).sum();
    if requested == 0 {
        return Ok(());
    }
    let lambda = &session.clients.lambda;
    let settings = lambda
        .get_account_settings()
        .send()
        .await
        .map_err(|e| aws_error("cannot read Lambda's account settings", e))?;
    let limit = settings.account_limit();
    let account = Account {
        limit: limit.map_or(0, |l| l.concurrent_executions().max(0) as u64),
        unreserved: limit
            .and_then(|l| l.unreserved_concurrent_executions())
            .map_or(0, |u| u.max(0) as u64),
    };
    let mut own_now = 0;
    for (id, _) in session.env.spec.functions.all() {
        let Some(name) = app.and_then(|s| s.outputs.get(&function_key(id, "FunctionName"))) else {
            continue;
        };
        match lambda
            .get_function_concurrency()
            .function_name(name)
            .send()
            .await
        {
            Ok(c) => own_now += c.reserved_concurrent_executions().unwrap_or(0).max(0) as u64,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => {
                return Err(aws_error(
                    &format!("cannot read the reserved concurrency of {name}"),
                    e,
                ));
            }
        }
    }
    let Some(short) = shortfall(account, own_now, requested) else {
        return Ok(());
    };
    let region = session.clients.region();
    let each: Vec<String> = reserving.iter().map(|(f, r)| format!("{f} {r}")).collect();
    Err(Error::Refused {
        message: format!(
            "the functions of `{}` would reserve {requested} concurrent executions ({}), but at most {} can be reserved in {region}: the account's Lambda quota \"Concurrent executions\" is {}, other functions reserve {}, and Lambda keeps {MIN_UNRESERVED} unreserved",
            session.env.name,
            each.join(", "),
            short.most,
            account.limit,
            short.others,
        ),
        help: Some(format!(
            "ask for a \"Concurrent executions\" quota of at least {} in Service Quotas (AWS Lambda, {region}), or lower `reserved_concurrency` in the spec; no stack was changed",
            short.needed
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_must_leave_100_unreserved() {
        let fresh = Account {
            limit: 1000,
            unreserved: 1000,
        };
        assert_eq!(shortfall(fresh, 0, 250), None);
        assert_eq!(shortfall(fresh, 0, 900), None);
        assert_eq!(
            shortfall(fresh, 0, 901),
            Some(Shortfall {
                others: 0,
                most: 900,
                needed: 1001
            })
        );
        // A new account's quota: prod's 250 do not fit.
        let small = Account {
            limit: 200,
            unreserved: 200,
        };
        assert_eq!(
            shortfall(small, 0, 250),
            Some(Shortfall {
                others: 0,
                most: 100,
                needed: 350
            })
        );
    }

    #[test]
    fn the_environments_own_reservations_are_freed_by_its_deploy() {
        // Others reserve 450, the environment 400: 150 unreserved.
        let account = Account {
            limit: 1000,
            unreserved: 150,
        };
        // Its 400 again fit (they are its own), 450 fit, 451 do not.
        assert_eq!(shortfall(account, 400, 400), None);
        assert_eq!(shortfall(account, 400, 450), None);
        assert_eq!(
            shortfall(account, 400, 451),
            Some(Shortfall {
                others: 450,
                most: 450,
                needed: 1001
            })
        );
    }
}
