//! What a site answers: the node's implementation of the transport's `Service`.
//!
//! Inventory calls are blocking LMDB transactions, so they run on tokio's blocking pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use cairn_inventory::{Inventory, InventoryError, Role, STORE_FORMAT};
use cairn_transport::{Request, Response, Service, SiteStatus, WireError, WireErrorKind};

/// The site's request handler.
#[derive(Debug)]
pub struct SiteService {
    inventory: Arc<Inventory>,
    role: Role,
    started: Instant,
}

impl SiteService {
    /// A handler over the site's inventory.
    pub fn new(inventory: Arc<Inventory>, role: Role) -> Self {
        Self { inventory, role, started: Instant::now() }
    }

    fn status(&self) -> SiteStatus {
        let identity = self.inventory.identity();
        SiteStatus {
            site_id: identity.site_id,
            cluster_id: identity.cluster_id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            store_format: STORE_FORMAT,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            role: self.role,
        }
    }

    /// Runs a blocking inventory call off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inventory) -> Result<T, InventoryError> + Send + 'static,
    ) -> Result<T, InventoryError> {
        let inventory = self.inventory.clone();
        match tokio::task::spawn_blocking(move || f(&inventory)).await {
            Ok(result) => result,
            Err(join) => {
                Err(InventoryError::InvalidSetting { what: "inventory task", why: join.to_string() })
            }
        }
    }
}

impl Service for SiteService {
    async fn handle(&self, peer: SocketAddr, request: Request) -> Response {
        match request {
            Request::Status => Response::Status(self.status()),
            Request::Schedule(plan) => {
                let (db, plan_id, priority) = (plan.db.clone(), plan.plan_id, plan.priority);
                match self.blocking(move |inv| inv.offer(&plan)).await {
                    Ok(outcome) => {
                        tracing::info!(%peer, %db, plan = %plan_id.short(), priority, ?outcome, "plan offered");
                        Response::Scheduled(outcome)
                    }
                    Err(InventoryError::PlanRejected(reason)) => {
                        Response::Rejected { reason: reason.to_string() }
                    }
                    Err(error) => {
                        tracing::error!(%peer, %db, %error, "cannot store an offered plan");
                        Response::Error(WireError::new(WireErrorKind::Internal, error.to_string()))
                    }
                }
            }
        }
    }
}
