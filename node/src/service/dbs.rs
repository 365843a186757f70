//! A db's creation, change and drop, in two steps: the site *prepares* the record the
//! operator's request would write and answers it unwritten (`DbPrepared`); the operator
//! seals it and sends it back (`CommitDb`), and the site checks the seal and that the
//! record still follows from what it knows, then writes and gossips it. Every other
//! site takes a db record from gossip only with a seal that checks, so no site can
//! make up a creation, a change or a drop on its own.

use cairn_inventory::{DbName, DbRecord, DbSettings, Hlc, Replication, Retention, now_ms};
use cairn_transport::Response;

use super::{SiteService, internal, unknown_db};
use crate::db_settings;

/// Why a record is not written.
fn refuse(reason: String) -> Response {
    Response::Rejected { reason }
}

fn exists(db: &DbRecord) -> String {
    format!("db {} already exists with {} shards × {}", db.name, db.settings.shards, db.settings.replication)
}

impl SiteService {
    /// The latest drop of `name` this site knows of: its own tombstone's or the view's.
    fn known_drop(&self, name: &DbName, local: Option<&DbRecord>) -> Option<Hlc> {
        let viewed =
            self.current_view().and_then(|v| v.dropped.iter().find(|d| d.name == *name).map(|d| d.at));
        local.filter(|r| r.dropped).map(|t| t.changed).max(viewed)
    }

    /// Whether the cluster may hold one more db.
    fn room_for_a_db(&self) -> Result<(), String> {
        let Some(v) = self.current_view() else { return Ok(()) };
        let known = v.dbs.len() + v.dropped.iter().filter(|d| v.db(&d.name).is_none()).count();
        if known >= self.limits.max_dbs {
            return Err(format!(
                "the cluster holds {known} dbs (dropped ones included), its cap; drop one first or raise max_dbs"
            ));
        }
        Ok(())
    }

    /// `CreateDb`: the creation record, unless the name is taken.
    pub(super) async fn prepare_create(&self, name: DbName, settings: DbSettings) -> Response {
        if let Some(existing) = self.current_view().and_then(|v| v.db(&name).map(|d| d.record())) {
            // Created elsewhere already: the same settings are the same db.
            return match existing.settings == settings {
                true => Response::DbCreated { created: false },
                false => refuse(exists(&existing)),
            };
        }
        if let Err(reason) = self.room_for_a_db() {
            return refuse(reason);
        }
        let n = name.clone();
        let local = match self.blocking(move |inv| inv.db_record(&n)).await {
            Ok(local) => local,
            Err(error) => return internal(&error),
        };
        match &local {
            Some(existing) if !existing.dropped && existing.settings == settings => {
                return Response::DbCreated { created: false };
            }
            Some(existing) if !existing.dropped => return refuse(exists(existing)),
            _ => {}
        }
        let mut record = DbRecord::new(name, settings, self.tick(), self.inventory.identity().site_id);
        // A name dropped before: the new db carries that drop, so records of the old one
        // stay dropped even when no tombstone is left.
        if let Some(at) = self.known_drop(&record.name, local.as_ref()) {
            record.supersedes = Some(at);
            if record.created <= at {
                record.created = at.tick(now_ms());
                record.changed = record.created;
            }
        }
        Response::DbPrepared { record }
    }

    /// `AlterDb`: the db's next record, unless nothing changes.
    pub(super) async fn prepare_alter(
        &self,
        db: DbName,
        replication: Option<Replication>,
        retention: Option<Retention>,
    ) -> Response {
        let base = match self.known_db(&db).await {
            Some(Ok(base)) => base,
            Some(Err(error)) => return internal(&error),
            None => return unknown_db(&db),
        };
        match db_settings::alter(&base, replication, retention, self.tick()) {
            Some(record) => Response::DbPrepared { record },
            None => Response::DbChanged {
                changed: false,
                replication: base.settings.replication.get(),
                dropped: false,
            },
        }
    }

    /// `DropDb`: the db's tombstone, unless it is dropped already.
    pub(super) async fn prepare_drop(&self, db: DbName) -> Response {
        match self.known_db(&db).await {
            Some(Ok(base)) => Response::DbPrepared { record: db_settings::tombstone(&base, self.tick()) },
            Some(Err(error)) => internal(&error),
            None => match self.current_view().is_some_and(|v| v.dropped.iter().any(|d| d.name == db)) {
                true => Response::DbChanged { changed: false, replication: 0, dropped: true },
                false => unknown_db(&db),
            },
        }
    }

    /// `CommitDb`: writes `record` if an operator sealed it and it still follows from
    /// what this site knows.
    pub(super) async fn commit(&self, record: DbRecord) -> Response {
        let operator = match self.certificate.trust().check_seal(&record, now_ms()) {
            Ok(operator) => operator,
            Err(why) => return refuse(format!("db {}: {why}", record.name)),
        };
        let ahead = record.changed.wall_ms.max(record.created.wall_ms).saturating_sub(now_ms());
        if ahead > self.limits.max_clock_drift_ms {
            return refuse(format!(
                "db {}: the record is {ahead} ms ahead of this site's clock (at most {} ms): prepare it again",
                record.name, self.limits.max_clock_drift_ms
            ));
        }
        let response = if record.dropped {
            self.commit_drop(record.clone()).await
        } else if record.is_creation() {
            self.commit_create(record.clone()).await
        } else {
            self.commit_alter(record.clone()).await
        };
        if matches!(
            response,
            Response::DbCreated { created: true } | Response::DbChanged { changed: true, .. }
        ) {
            let mut clock = self.clock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *clock = (*clock).max(record.changed);
            tracing::info!(db = %record.name, %operator, dropped = record.dropped, "db record committed");
        }
        response
    }

    async fn commit_create(&self, record: DbRecord) -> Response {
        if record.origin != self.inventory.identity().site_id {
            return refuse(format!(
                "db {}: a creation is committed at the site that prepared it",
                record.name
            ));
        }
        if let Some(existing) = self.current_view().and_then(|v| v.db(&record.name).map(|d| d.record())) {
            return match existing.incarnation() == record.incarnation() {
                true => Response::DbCreated { created: false },
                false => refuse(exists(&existing)),
            };
        }
        if let Err(reason) = self.room_for_a_db() {
            return refuse(reason);
        }
        let view_drop = self.known_drop(&record.name, None);
        let result = self
            .blocking(move |inv| {
                let local = inv.db_record(&record.name)?;
                match &local {
                    Some(existing) if existing.incarnation() == record.incarnation() => return Ok(Ok(false)),
                    Some(existing) if !existing.dropped => return Ok(Err(exists(existing))),
                    _ => {}
                }
                let drop = local.filter(|r| r.dropped).map(|t| t.changed).max(view_drop);
                if drop.is_some_and(|at| record.supersedes.is_none_or(|s| s < at) || record.created <= at) {
                    return Ok(Err(format!(
                        "db {}: the name was dropped after this creation was prepared; prepare it again",
                        record.name
                    )));
                }
                inv.put_db(&record).map(|()| Ok(true))
            })
            .await;
        match result {
            Ok(Ok(created)) => Response::DbCreated { created },
            Ok(Err(reason)) => refuse(reason),
            Err(error) => internal(&error),
        }
    }

    /// The db a change or drop applies to: known here, of the same creation, and not
    /// changed since the record was prepared. `Ok(None)`: the record is already in force.
    async fn base_of(&self, record: &DbRecord) -> Result<Option<DbRecord>, Response> {
        let base = match self.known_db(&record.name).await {
            Some(Ok(base)) => base,
            Some(Err(error)) => return Err(internal(&error)),
            None => return Err(unknown_db(&record.name)),
        };
        if base.incarnation() != record.incarnation() {
            return Err(refuse(format!(
                "db {}: the record is of another creation of the name than the one this site knows",
                record.name
            )));
        }
        if base.version() >= record.version() {
            return match base.version() == record.version() {
                true => Ok(None),
                false => Err(refuse(format!(
                    "db {}: it changed after this was prepared; prepare it again",
                    record.name
                ))),
            };
        }
        if base.settings.shards != record.settings.shards || base.settings.routing != record.settings.routing
        {
            return Err(refuse(format!(
                "db {}: a change cannot change the shard count or routing",
                record.name
            )));
        }
        Ok(Some(base))
    }

    async fn commit_alter(&self, record: DbRecord) -> Response {
        let replication = record.settings.replication.get();
        match self.base_of(&record).await {
            Err(response) => return response,
            Ok(None) => return Response::DbChanged { changed: false, replication, dropped: false },
            Ok(Some(_)) => {}
        }
        let name = record.name.clone();
        match self.blocking(move |inv| inv.put_db(&record)).await {
            Ok(()) => {
                tracing::info!(db = %name, replication, "db settings changed by request");
                Response::DbChanged { changed: true, replication, dropped: false }
            }
            Err(error) => internal(&error),
        }
    }

    async fn commit_drop(&self, record: DbRecord) -> Response {
        let replication = record.settings.replication.get();
        let gone = Response::DbChanged { changed: false, replication, dropped: true };
        let n = record.name.clone();
        let known = match self.blocking(move |inv| inv.db(&n)).await {
            Ok(local) => local.is_some() || self.current_view().is_some_and(|v| v.db(&record.name).is_some()),
            Err(error) => return internal(&error),
        };
        if !known && self.current_view().is_some_and(|v| v.dropped.iter().any(|d| d.name == record.name)) {
            return gone;
        }
        match self.base_of(&record).await {
            Err(response) => return response,
            Ok(None) => return gone,
            Ok(Some(_)) => {}
        }
        let name = record.name.clone();
        match self.blocking(move |inv| inv.drop_db(&record)).await {
            Ok(replicas) => {
                tracing::info!(db = %name, replicas, "db dropped by request");
                Response::DbChanged { changed: true, replication, dropped: true }
            }
            Err(error) => internal(&error),
        }
    }
}
