//! `cairn cluster revoke CERT|ID`: adds a certificate (by its file) or an identity (a
//! site id, or a `cairn://kind/name` URI) to the cluster's revocation list, seals the
//! list with the operator's key and hands it to a site, which gossips it; every site
//! then refuses the revoked peer's connections and leaves it out of its view.

use std::path::Path;

use anyhow::bail;
use cairn_inventory::{RevocationList, Revoked, SiteId, now_ms};
use cairn_transport::tls::{CertificateFacts, Identity, fingerprint, read_certificate};
use cairn_transport::{Request, Response};

use crate::cli::client::{Client, ConnArgs, with_client};

/// What `target` names: a certificate file (PEM), a site id (its site and replicant
/// identities), or an identity URI.
fn entries(target: &str) -> anyhow::Result<Vec<Revoked>> {
    let path = Path::new(target);
    if path.is_file() {
        let cert = read_certificate(path)?;
        let identity = CertificateFacts::read(&cert.as_slice().into())
            .map_or_else(|_| "no identity".to_owned(), |facts| facts.identity.uri());
        println!("certificate {target} names {identity}");
        return Ok(vec![Revoked::Certificate(fingerprint(cert.as_ref()))]);
    }
    if let Ok(id) = target.parse::<SiteId>() {
        return Ok(vec![
            Revoked::Identity(Identity::Site(id).uri()),
            Revoked::Identity(Identity::Replicant(id).uri()),
        ]);
    }
    match target.parse::<Identity>() {
        Ok(identity) => Ok(vec![Revoked::Identity(identity.uri())]),
        Err(_) => Err(crate::UsageError::from_err(&anyhow::anyhow!(
            "{target:?} is neither a certificate file, a site id (32 hex digits) nor an identity URI \
             (cairn://site/ID, cairn://replicant/ID, cairn://operator/NAME, cairn://client/NAME)"
        ))),
    }
}

/// Revokes `target` through the site `conn` names.
pub(crate) fn revoke(target: &str, conn: &ConnArgs) -> anyhow::Result<()> {
    let entries = entries(target)?;
    with_client(conn, async |client| send(client, &entries, target).await)
}

async fn send(client: &Client, entries: &[Revoked], target: &str) -> anyhow::Result<()> {
    let view = crate::cli::dump::node_view(client).await?;
    let mut list =
        view.revocations.unwrap_or(RevocationList { issued_ms: 0, entries: Vec::new(), seal: None });
    for entry in entries {
        list = list.with(entry.clone(), now_ms()).map_err(|why| anyhow::anyhow!(why))?;
    }
    list.seal = Some(client.signer().seal_revocations(&list));
    let issued_ms = list.issued_ms;
    let entries_now = list.entries.len();
    match client.request(&Request::Revoke { list }).await? {
        Response::RevocationsTaken { taken: true, .. } => {
            println!(
                "revoked {target}: the list now holds {entries_now} entries (issued {issued_ms}); every site \
                 refuses it within a few gossip rounds"
            );
            Ok(())
        }
        Response::RevocationsTaken { taken: false, issued_ms: held } => bail!(
            "{} holds a newer revocation list (issued {held}) than the one this was added to: run the command again",
            client.node()
        ),
        Response::Rejected { reason } => bail!("{} refused: {reason}", client.node()),
        other => bail!("{} answered revoke with {other:?}", client.node()),
    }
}
