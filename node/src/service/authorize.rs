//! Who may send what: a site's one access table, checked before any request, pull
//! stream or subscription is served. Pure: the identity comes from the peer's verified
//! certificate, the planner of record from the site's view.
//!
//! | request                                        | operator | core site | replicant | client |
//! |------------------------------------------------|----------|-----------|-----------|--------|
//! | `Status`, `Dump`                               | yes      | yes       | yes       | no     |
//! | `CreateDb`, `AlterDb`, `DropDb`                | yes      | no        | no        | no     |
//! | `SetDraining`, `CancelPlan`, `PlanPreview`     | yes      | no        | no        | no     |
//! | `Schedule` (plan delivery)                     | yes      | automatic plans of its own, at automatic priority, while it is planner of record | no | no |
//! | `Publish`, `Write`, `Read`, `Fetch`, `Routes`, subscriptions | yes | yes (its HTTP gateway's users') | yes (its clients' and its gateway's) | yes |
//! | pull streams                                   | no       | as itself | as itself | no     |
//! | gossip (checked by the transport)              | no       | yes       | yes       | no     |
//!
//! Everything else is refused with a `Forbidden` error naming the identity and the
//! request.

use cairn_inventory::{PlanOrigin, SiteId};
use cairn_transport::{Identity, PullRequest, Request};

use crate::planner::AUTOMATIC_PRIORITY;

/// What a peer asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Asked<'a> {
    /// One request.
    Request(&'a Request),
    /// A pull stream.
    Pull(&'a PullRequest),
    /// A subscription.
    Subscribe,
}

impl Asked<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Self::Request(request) => request.kind(),
            Self::Pull(_) => "pull",
            Self::Subscribe => "subscribe",
        }
    }
}

/// Whether `asked` is a data-plane request (publish, read, streams).
fn is_data_plane(asked: Asked<'_>) -> bool {
    matches!(
        asked,
        Asked::Request(
            Request::Publish { .. }
                | Request::Write(_)
                | Request::Read { .. }
                | Request::Fetch(_)
                | Request::Routes { .. },
        ) | Asked::Subscribe
    )
}

/// Checks `asked` from `identity` against the table; `planner_of_record` is the site the
/// view makes planner of record, if any. The error says who was refused what, and why.
pub(crate) fn authorize(
    identity: &Identity,
    asked: Asked<'_>,
    planner_of_record: Option<SiteId>,
) -> Result<(), String> {
    let refuse = |rule: &str| Err(format!("{identity} may not send {}: {rule}", asked.kind()));
    match (identity, asked) {
        (Identity::Operator(_), Asked::Pull(_)) => refuse("pull streams are between sites"),
        (Identity::Operator(_), _) => Ok(()),
        (Identity::Site(me) | Identity::Replicant(me), Asked::Pull(pull)) => match pull.receiver == *me {
            true => Ok(()),
            false => refuse(&format!("it names site {} as the receiver, not itself", pull.receiver.short())),
        },
        (Identity::Site(_) | Identity::Replicant(_), Asked::Request(Request::Status | Request::Dump)) => {
            Ok(())
        }
        (Identity::Site(me), Asked::Request(Request::Schedule(plan))) => {
            let own = matches!(plan.origin, PlanOrigin::Automatic { planner } if planner == *me);
            if !own {
                refuse("a site delivers only the automatic plans it made itself")
            } else if plan.priority > AUTOMATIC_PRIORITY {
                refuse(&format!("priority {} is above automatic plans' {AUTOMATIC_PRIORITY}", plan.priority))
            } else if planner_of_record != Some(*me) {
                let current = planner_of_record.map_or("none".to_owned(), |s| s.short());
                refuse(&format!("it is not the planner of record here (that is {current})"))
            } else {
                Ok(())
            }
        }
        // A site forwards data requests: a replicant its clients' writes, any site its
        // HTTP gateway's users'. (A site can already read every shard it pulls and
        // write entries of its own origin; this gives it nothing more.)
        (Identity::Site(_) | Identity::Replicant(_) | Identity::Client(_), asked) if is_data_plane(asked) => {
            Ok(())
        }
        (Identity::Site(_) | Identity::Replicant(_), _) => refuse("operator or client requests only"),
        (Identity::Client(_), _) => {
            refuse("a client sends data-plane requests only (publish, read, streams)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_inventory::{DbName, Frontier, Plan, PlanId};
    use cairn_transport::PrincipalName;

    fn plan(origin: PlanOrigin, priority: u32) -> Request {
        Request::Schedule(Plan {
            db: DbName::new("d").unwrap(),
            plan_id: PlanId(1),
            priority,
            origin,
            steps: Vec::new(),
        })
    }

    fn pull(receiver: SiteId) -> PullRequest {
        PullRequest {
            db: DbName::new("d").unwrap(),
            shard: 0,
            frontier: Frontier::default(),
            cursor: 0,
            follow: true,
            receiver,
            receiver_own_seq: 0,
        }
    }

    #[test]
    fn the_table() {
        let (a, b) = (SiteId(1), SiteId(2));
        let operator = Identity::Operator(PrincipalName::new("ops").unwrap());
        let client = Identity::Client(PrincipalName::new("app").unwrap());
        let (site, replicant) = (Identity::Site(a), Identity::Replicant(a));
        let drop = Request::DropDb { db: DbName::new("d").unwrap() };
        let drain = Request::SetDraining {
            order: cairn_inventory::DrainOrder { site: a, on: true, at_ms: 0, seal: None },
        };
        let routes = Request::Routes { db: DbName::new("d").unwrap() };
        let auto = plan(PlanOrigin::Automatic { planner: a }, AUTOMATIC_PRIORITY);
        let high = plan(PlanOrigin::Automatic { planner: a }, u32::MAX);
        let forged = plan(PlanOrigin::Automatic { planner: b }, AUTOMATIC_PRIORITY);
        let by_operator = plan(PlanOrigin::Operator { via: a }, 100);
        let cases: &[(&Identity, Asked, Option<SiteId>, bool)] = &[
            (&operator, Asked::Request(&drop), None, true),
            (&operator, Asked::Request(&by_operator), None, true),
            (&operator, Asked::Subscribe, None, true),
            (&operator, Asked::Pull(&pull(a)), None, false),
            (&site, Asked::Request(&drop), Some(a), false),
            (&site, Asked::Request(&drain), Some(a), false),
            (&site, Asked::Request(&auto), Some(a), true),
            (&site, Asked::Request(&auto), Some(b), false),
            (&site, Asked::Request(&auto), None, false),
            (&site, Asked::Request(&high), Some(a), false),
            (&site, Asked::Request(&forged), Some(a), false),
            (&site, Asked::Request(&by_operator), Some(a), false),
            (&site, Asked::Request(&Request::Status), None, true),
            (&site, Asked::Request(&routes), None, true),
            (&site, Asked::Subscribe, None, true),
            (&replicant, Asked::Request(&routes), None, true),
            (&site, Asked::Pull(&pull(a)), None, true),
            (&site, Asked::Pull(&pull(b)), None, false),
            (&replicant, Asked::Pull(&pull(a)), None, true),
            (&replicant, Asked::Pull(&pull(b)), None, false),
            (&replicant, Asked::Request(&auto), Some(a), false),
            (&replicant, Asked::Request(&drop), None, false),
            (&replicant, Asked::Request(&Request::Dump), None, true),
            (&client, Asked::Request(&routes), None, true),
            (&client, Asked::Subscribe, None, true),
            (&client, Asked::Request(&drop), None, false),
            (&client, Asked::Request(&drain), None, false),
            (&client, Asked::Request(&auto), Some(a), false),
            (&client, Asked::Request(&Request::Status), None, false),
            (&client, Asked::Pull(&pull(a)), None, false),
        ];
        for (identity, asked, planner, allowed) in cases {
            let verdict = authorize(identity, *asked, *planner);
            assert_eq!(verdict.is_ok(), *allowed, "{identity} {asked:?}: {verdict:?}");
            if let Err(why) = verdict {
                assert!(why.starts_with(&format!("{identity} may not send {}", asked.kind())), "{why}");
            }
        }
    }
}
