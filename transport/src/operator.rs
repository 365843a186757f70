//! An operator's db changes, sealed: the site prepares the record a creation, change or
//! drop would write, the operator checks it is what was asked, signs it, and sends it
//! back to be written. Sites take a db record from gossip only with an operator's seal,
//! so no site can make up a drop (or any other db change) on its own.

use std::net::SocketAddr;

use cairn_types::{DbName, DbRecord, DbSettings, Replication, Retention};

use crate::endpoint::Endpoint;
use crate::error::TransportError;
use crate::message::{Request, Response};
use crate::tls::Signer;

/// What an operator asks of a db.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbChange {
    /// Create it with these settings.
    Create {
        /// The name.
        name: DbName,
        /// Shards, replication factor, retention.
        settings: DbSettings,
    },
    /// Change its replication factor and/or retention.
    Alter {
        /// The db.
        db: DbName,
        /// The new factor, if it changes.
        replication: Option<Replication>,
        /// The new retention, if it changes.
        retention: Option<Retention>,
    },
    /// Drop it (every holder deletes its data).
    Drop {
        /// The db.
        db: DbName,
    },
}

impl DbChange {
    /// The request that asks a site to prepare it.
    pub fn prepare(&self) -> Request {
        match self.clone() {
            Self::Create { name, settings } => Request::CreateDb { name, settings },
            Self::Alter { db, replication, retention } => Request::AlterDb { db, replication, retention },
            Self::Drop { db } => Request::DropDb { db },
        }
    }

    /// Whether `record` (what a site prepared) is this change and nothing else; else
    /// what differs. The operator signs only records that pass.
    pub fn check(&self, record: &DbRecord) -> Result<(), String> {
        let differs =
            |what: &str| Err(format!("the site prepared a record with another {what}: refusing to sign it"));
        match self {
            Self::Create { name, settings } => {
                if record.name != *name {
                    return differs("name");
                }
                if record.settings != *settings {
                    return differs("settings");
                }
                if !record.is_creation() {
                    return differs("kind of change (not a creation)");
                }
            }
            Self::Alter { db, replication, retention } => {
                if record.name != *db {
                    return differs("name");
                }
                if record.dropped || record.is_creation() {
                    return differs("kind of change (not a change of settings)");
                }
                if replication.is_some_and(|r| r != record.settings.replication) {
                    return differs("replication factor");
                }
                if retention.is_some_and(|r| r != record.settings.retention) {
                    return differs("retention");
                }
            }
            Self::Drop { db } => {
                if record.name != *db {
                    return differs("name");
                }
                if !record.dropped {
                    return differs("kind of change (not a drop)");
                }
            }
        }
        Ok(())
    }
}

/// Makes `change` at the site at `addr`: asks it to prepare the record, checks the
/// record, seals it with `signer` (an operator's) and sends it back. Answers the site's
/// last response: [`Response::DbCreated`] or [`Response::DbChanged`] when done (also
/// when there was nothing to do), [`Response::Rejected`] or an error otherwise.
pub async fn change_db(
    endpoint: &Endpoint,
    addr: SocketAddr,
    signer: &Signer,
    change: &DbChange,
) -> Result<Response, TransportError> {
    let mut record = match endpoint.request(addr, &change.prepare()).await? {
        Response::DbPrepared { record } => record,
        other => return Ok(other),
    };
    if let Err(reason) = change.check(&record) {
        return Ok(Response::Rejected { reason });
    }
    record.seal = Some(signer.seal(&record));
    endpoint.request(addr, &Request::CommitDb { record }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_types::{Hlc, SiteId};

    fn record() -> DbRecord {
        let settings = DbSettings::new(4, 2, Retention::default()).unwrap();
        DbRecord::new(DbName::new("d").unwrap(), settings, Hlc { wall_ms: 5, logical: 0 }, SiteId(1))
    }

    #[test]
    fn only_the_record_asked_for_passes() {
        let created = record();
        let create = DbChange::Create { name: created.name.clone(), settings: created.settings };
        assert_eq!(create.check(&created), Ok(()));
        let mut other = created.clone();
        other.settings = DbSettings::new(4, 3, Retention::default()).unwrap();
        assert!(create.check(&other).unwrap_err().contains("settings"));
        let mut dropped = created.clone();
        dropped.dropped = true;
        dropped.changed = Hlc { wall_ms: 9, logical: 0 };
        assert!(create.check(&dropped).is_err());
        let drop = DbChange::Drop { db: created.name.clone() };
        assert_eq!(drop.check(&dropped), Ok(()));
        assert!(drop.check(&created).unwrap_err().contains("not a drop"));
        let alter = DbChange::Alter {
            db: created.name.clone(),
            replication: Some(Replication::new(3).unwrap()),
            retention: None,
        };
        let mut altered = other.clone();
        altered.changed = Hlc { wall_ms: 9, logical: 0 };
        assert_eq!(alter.check(&altered), Ok(()));
        assert!(alter.check(&created).is_err(), "a creation is no change");
        assert!(alter.check(&dropped).is_err(), "a drop is no change");
    }
}
