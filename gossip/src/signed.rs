//! Signed gossip: every value a site publishes is signed with its certificate's key,
//! and a view takes in only what checks.
//!
//! chitchat relays any node's state from any peer, so without signatures a member could
//! publish values under another site's id. Here:
//! - a site gossips its certificate (DER) under [`CERT_KEY`] — its current one, and
//!   after a renewal the one before, so values signed just before a reload still check
//!   while the re-signed ones travel;
//! - every other value is `<payload>.<signature>`, the signature (ECDSA P-256, base64)
//!   covering a domain tag, the site id, the process generation, the chitchat version
//!   the value is set at, the key and the payload — so a value cannot be moved to
//!   another site, key, process or version (a relayed old value at a newer version
//!   fails);
//! - [`Verifier::admit`] turns chitchat's node states into the view's [`NodeInput`]s:
//!   a node gossips under a short name ([`GossipName`]), and its site id is the one
//!   its certificate names; a node whose certificate does not chain to the cluster CA,
//!   is not valid now, names a site of another gossip name, or names another role is
//!   *unverified* (left out of the view, so never a
//!   holder, a planner or a handover target); a value whose signature does not check
//!   is *forged* and left out. Both become `forged` warnings in the view.
//!
//! - a `db:` value (a db's creation, change or drop) must also carry an operator's seal
//!   ([`cairn_transport::ClusterTrust::check_seal`]): a site gossips what an operator
//!   ordered, and cannot make up a drop; one without is *forged* too.
//!
//! It is pure (the time is an argument) and remembers what it checked per node and
//! chitchat `max_version`, and per value by version and hash, so a steady state costs
//! no signature checks and a changed node only those of its changed values.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cairn_inventory::{DrainOrder, RevocationList, Role, SiteId, codec};
use cairn_transport::{ClusterTrust, Identity, RevokedSet, Signer, VerifyingKey};

use crate::name::GossipName;
use crate::summary::{DbSummary, SITE_KEY, SiteSummary, SummaryKey, decode_value};
use crate::view::NodeInput;

/// The key a site gossips its certificate(s) under.
pub const CERT_KEY: &str = "cert";
/// Most certificates under [`CERT_KEY`] (the current one and the one it replaced).
pub const MAX_CERTIFICATES: usize = 2;
/// Largest certificate taken in (DER bytes).
pub const MAX_CERTIFICATE_BYTES: usize = 8 * 1024;

const DOMAIN: &[u8] = b"cairn gossip value v1\0";

/// The bytes a value's signature covers.
fn signed_message(site: SiteId, generation: u64, version: u64, key: &str, payload: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(DOMAIN.len() + 40 + key.len() + payload.len());
    message.extend_from_slice(DOMAIN);
    message.extend_from_slice(&site.0.to_be_bytes());
    message.extend_from_slice(&generation.to_be_bytes());
    message.extend_from_slice(&version.to_be_bytes());
    message.extend_from_slice(&(key.len() as u64).to_be_bytes());
    message.extend_from_slice(key.as_bytes());
    message.extend_from_slice(payload.as_bytes());
    message
}

/// `payload` signed by `signer` for `key` of `site`'s process `generation`, to be set at
/// chitchat `version`.
pub fn sign_value(
    signer: &Signer,
    site: SiteId,
    generation: u64,
    version: u64,
    key: &str,
    payload: &str,
) -> String {
    let signature = signer.sign(&signed_message(site, generation, version, key, payload));
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The [`CERT_KEY`] value: these certificates (DER), newest first.
pub fn encode_certificates(certificates: &[&[u8]]) -> String {
    let list: Vec<&[u8]> = certificates.iter().take(MAX_CERTIFICATES).copied().collect();
    URL_SAFE_NO_PAD.encode(codec::encode(&list).unwrap_or_default())
}

fn decode_certificates(text: &str) -> Result<Vec<Vec<u8>>, String> {
    if text.len() > (MAX_CERTIFICATES * MAX_CERTIFICATE_BYTES) * 4 / 3 + 64 {
        return Err(format!("{} bytes of certificates is too long", text.len()));
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|e| format!("not base64: {e}"))?;
    let list: Vec<Vec<u8>> = codec::decode(&bytes).map_err(|e| e.to_string())?;
    if list.is_empty() || list.len() > MAX_CERTIFICATES {
        return Err(format!("{} certificates listed; 1 to {MAX_CERTIFICATES} are allowed", list.len()));
    }
    Ok(list)
}

/// The key a site signs its gossip with; replaced when its certificate is renewed
/// (the gossip then publishes the new certificate with the old one, and signs every
/// value again).
#[derive(Debug)]
pub struct SigningKeys {
    inner: std::sync::RwLock<CurrentKeys>,
}

#[derive(Debug, Clone)]
struct CurrentKeys {
    epoch: u64,
    signer: std::sync::Arc<Signer>,
    previous: Option<Vec<u8>>,
}

impl SigningKeys {
    /// Signing with `signer`.
    pub fn new(signer: Signer) -> Self {
        let keys = CurrentKeys { epoch: 0, signer: std::sync::Arc::new(signer), previous: None };
        Self { inner: std::sync::RwLock::new(keys) }
    }

    /// Signs with `signer` from now on (its certificate gossiped with the one before).
    pub fn replace(&self, signer: Signer) {
        let mut keys = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.previous = Some(keys.signer.certificate().to_vec());
        keys.signer = std::sync::Arc::new(signer);
        keys.epoch += 1;
    }

    /// The signer, how many times it was replaced, and the [`CERT_KEY`] value to gossip.
    pub fn current(&self) -> (u64, std::sync::Arc<Signer>, String) {
        let keys = self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut certificates = vec![keys.signer.certificate()];
        certificates.extend(keys.previous.as_deref());
        (keys.epoch, keys.signer.clone(), encode_certificates(&certificates))
    }
}

/// One gossiped value as chitchat holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipedValue {
    /// The key.
    pub key: String,
    /// The value as published (signed).
    pub value: String,
    /// The chitchat version it was set at.
    pub version: u64,
}

/// One chitchat node's state, before its signatures are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipedNode {
    /// The name it gossips under (chitchat node id); its certificate says which site.
    pub name: GossipName,
    /// The process generation.
    pub generation: u64,
    /// The address chitchat gossips with.
    pub gossip_addr: SocketAddr,
    /// Whether the failure detector considers it live.
    pub live: bool,
    /// When this node last saw its heartbeat advance (ms since the Unix epoch).
    pub last_seen_ms: Option<u64>,
    /// The highest version of its key/values (chitchat's `max_version`): while it does
    /// not move, neither do the values.
    pub max_version: u64,
    /// Its key/values (tombstones excluded), or `None` when [`Verifier::has_seen`] said
    /// this node was admitted at this `max_version` already (so the caller need not
    /// copy them out of chitchat again).
    pub values: Option<Vec<GossipedValue>>,
}

/// Why a value or a node was not taken in.
type Refusal = String;

#[derive(Debug, Clone)]
struct CheckedValue {
    version: u64,
    hash: u64,
    outcome: Result<String, Refusal>,
}

/// What was admitted of one node (gossip name, generation, address) at one `max_version`.
#[derive(Debug, Clone)]
struct AdmittedNode {
    max_version: u64,
    certificates_hash: u64,
    /// The site its certificates name and their keys (expiry looked at each time), or
    /// why none checks.
    keys: Result<(SiteId, Vec<VerifyingKey>), Refusal>,
    values: HashMap<String, CheckedValue>,
    key_values: Vec<(String, String)>,
    forged: Vec<(String, String)>,
    /// Why the node is not believed although its certificate checks.
    refused: Option<Refusal>,
}

/// A chitchat node: name, generation, gossip address (two sites may share a name; see
/// [`GossipName`]).
type NodeKey = (GossipName, u64, SocketAddr);

/// Checks gossiped state against the cluster CA, remembering what it checked: a node
/// whose `max_version` has not moved costs nothing but its certificates' expiry.
#[derive(Debug)]
pub struct Verifier {
    trust: ClusterTrust,
    hasher: RandomState,
    nodes: HashMap<NodeKey, AdmittedNode>,
    /// Outcomes of seal checks by the value's hash: many sites gossip one record.
    seals: HashMap<u64, Result<(), Refusal>>,
    /// What the newest revocation list revokes: nodes whose certificates it names are
    /// not believed.
    revoked: RevokedSet,
}

/// Seal outcomes remembered at most (then forgotten all at once).
const MAX_REMEMBERED_SEALS: usize = 4096;

impl Verifier {
    /// A verifier for the cluster `trust` checks against.
    pub fn new(trust: ClusterTrust) -> Self {
        Self {
            trust,
            hasher: RandomState::new(),
            nodes: HashMap::new(),
            seals: HashMap::new(),
            revoked: RevokedSet::default(),
        }
    }

    /// Takes the revocations of `list` (an operator-sealed list the view chose) into
    /// account from the next [`Self::admit`], if it is newer than those it has.
    pub fn revoke(&mut self, list: &RevocationList) {
        if list.issued_ms > self.revoked.issued_ms() {
            self.revoked = RevokedSet::new(list);
        }
    }

    /// Whether this node was admitted at `max_version` already: its values may then be
    /// left out of the next [`Self::admit`].
    pub fn has_seen(&self, name: GossipName, generation: u64, addr: SocketAddr, max_version: u64) -> bool {
        self.nodes.get(&(name, generation, addr)).is_some_and(|n| n.max_version == max_version)
    }

    /// The view's inputs: each node with its values' payloads, or marked unverified,
    /// at `now_ms`. What it remembers of nodes no longer gossiped is dropped.
    pub fn admit(&mut self, nodes: Vec<GossipedNode>, now_ms: u64) -> Vec<NodeInput> {
        let mut admitted = HashMap::with_capacity(nodes.len());
        let inputs = nodes
            .into_iter()
            .map(|node| {
                let at = (node.name, node.generation, node.gossip_addr);
                let before = self.nodes.remove(&at);
                let checked = match (before, node.values) {
                    (Some(before), None) if before.max_version == node.max_version => before,
                    (before, values) => {
                        self.check_node(at, node.max_version, values.unwrap_or_default(), before, now_ms)
                    }
                };
                let site_id = match &checked.keys {
                    Ok((site, _)) => *site,
                    Err(_) => node.name.partial_site_id(),
                };
                let input = NodeInput {
                    site_id,
                    generation: node.generation,
                    gossip_addr: node.gossip_addr,
                    live: node.live,
                    last_seen_ms: node.last_seen_ms,
                    key_values: Vec::new(),
                    forged: Vec::new(),
                    unverified: None,
                };
                let input = finish(input, &checked, &self.revoked, now_ms);
                admitted.insert(at, checked);
                input
            })
            .collect();
        self.nodes = admitted;
        inputs
    }

    /// Checks a node's certificates and values, reusing what `before` checked of them.
    fn check_node(
        &mut self,
        (name, generation, _): NodeKey,
        max_version: u64,
        values: Vec<GossipedValue>,
        before: Option<AdmittedNode>,
        now_ms: u64,
    ) -> AdmittedNode {
        let certificates = values.iter().find(|v| v.key == CERT_KEY).map(|v| v.value.as_str());
        let certificates_hash = certificates.map_or(0, |text| self.hasher.hash_one(text));
        // Values checked before are not checked again, unless the certificates changed:
        // they may no longer hold the key a value was signed with, or name another site.
        let (mut old_values, old_keys) = match before {
            Some(b) if b.certificates_hash == certificates_hash => (b.values, Some(b.keys)),
            _ => (HashMap::new(), None),
        };
        let keys = match (certificates, old_keys) {
            (None, _) => Err("it gossips no certificate".to_owned()),
            (Some(_), Some(keys)) => keys,
            (Some(text), _) => self.check_certificates(name, text, now_ms),
        };
        let mut node = AdmittedNode {
            max_version,
            certificates_hash,
            keys,
            values: HashMap::new(),
            key_values: Vec::new(),
            forged: Vec::new(),
            refused: None,
        };
        let Ok((site, keys)) = &node.keys else { return node };
        let site = *site;
        for GossipedValue { key, value, version } in values {
            if key == CERT_KEY || SummaryKey::parse(&key).is_none() {
                continue;
            }
            let hash = self.hasher.hash_one(&value);
            let outcome = match old_values.remove(&key) {
                Some(seen) if seen.version == version && seen.hash == hash => seen.outcome,
                _ => check_value(keys, site, generation, version, &key, &value)
                    .and_then(|payload| self.check_operator_seal(&key, payload, now_ms)),
            };
            match &outcome {
                Ok(payload) => node.key_values.push((key.clone(), payload.clone())),
                Err(why) => node.forged.push((key.clone(), why.clone())),
            }
            node.values.insert(key, CheckedValue { version, hash, outcome });
        }
        // The role it gossips must be the one its certificate names.
        let certified = match keys.first().map(VerifyingKey::identity) {
            Some(Identity::Replicant(_)) => Role::Replicant,
            _ => Role::Core,
        };
        let summary = node.key_values.iter().find(|(k, _)| k == SITE_KEY);
        let summary = summary.and_then(|(_, payload)| decode_value::<SiteSummary>(payload).ok());
        if let Some(summary) = &summary
            && summary.role != certified
        {
            node.refused = Some(format!(
                "it gossips as a {} but its certificate is a {}'s",
                role_name(summary.role),
                role_name(certified)
            ));
        } else if let Some(summary) = summary.filter(|s| s.draining)
            && let Err(why) = self.check_drain_order(site, summary.drain.as_ref(), now_ms)
        {
            node.refused = Some(format!("it says it is draining, but {why}"));
        } else if let Some((_, why)) = node.forged.iter().find(|(k, _)| k == SITE_KEY) {
            node.refused = Some(format!("its site summary is not believed: {why}"));
        }
        node
    }

    /// A db record, and a revocation list, must carry an operator's seal (a site may
    /// gossip only what an operator ordered about dbs — above all no drop of its own
    /// making — and about who is revoked). A payload that does not decode is passed on,
    /// for the view to call `invalid`. Outcomes are remembered by the payload's hash:
    /// many sites gossip the same record.
    fn check_operator_seal(&mut self, key: &str, payload: String, now_ms: u64) -> Result<String, Refusal> {
        let parsed = SummaryKey::parse(key);
        if !matches!(parsed, Some(SummaryKey::Db(_) | SummaryKey::Revocations)) {
            return Ok(payload);
        }
        let hash = self.hasher.hash_one(&payload);
        if let Some(outcome) = self.seals.get(&hash) {
            return outcome.clone().map(|()| payload);
        }
        let outcome = match parsed {
            Some(SummaryKey::Db(name)) => {
                let Ok(summary) = decode_value::<DbSummary>(&payload) else { return Ok(payload) };
                let record = summary.record(name);
                self.trust.check_seal(&record, now_ms).map(drop).map_err(|why| {
                    let what = if record.dropped { "drop of" } else { "record of" };
                    format!("its {what} db {} is not an operator's: {why}", record.name)
                })
            }
            _ => {
                let Ok(list) = decode_value::<RevocationList>(&payload) else { return Ok(payload) };
                let checked = self.trust.check_revocations(&list, now_ms).map(drop);
                checked.map_err(|why| format!("its revocation list is not an operator's: {why}"))
            }
        };
        if self.seals.len() >= MAX_REMEMBERED_SEALS {
            self.seals.clear();
        }
        self.seals.insert(hash, outcome.clone());
        outcome.map(|()| payload)
    }

    /// Whether `order` is an operator's order that `site` drain.
    fn check_drain_order(
        &self,
        site: SiteId,
        order: Option<&DrainOrder>,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let Some(order) = order.filter(|o| o.on && o.site == site) else {
            return Err("no operator ordered it".into());
        };
        self.trust.check_drain(order, now_ms).map(drop).map_err(|why| format!("its drain order: {why}"))
    }

    /// The site the certificates in `text` name and the keys of those that check: each
    /// must chain to the cluster CA, be valid now, and name a site gossiping under
    /// `name` — the same site for all (a renewed certificate and the one before it).
    fn check_certificates(
        &self,
        name: GossipName,
        text: &str,
        now_ms: u64,
    ) -> Result<(SiteId, Vec<VerifyingKey>), Refusal> {
        let mut keys = Vec::new();
        let mut named: Option<SiteId> = None;
        let mut last_error = String::new();
        for der in decode_certificates(text)? {
            if der.len() > MAX_CERTIFICATE_BYTES {
                last_error = format!("a certificate of {} bytes is too long", der.len());
                continue;
            }
            let key = match self.trust.member(&der, now_ms) {
                Ok(key) => key,
                Err(why) => {
                    last_error = why;
                    continue;
                }
            };
            match key.identity().site_id() {
                Some(site) if name.names(site) && named.is_none_or(|first| first == site) => {
                    named = Some(site);
                    keys.push(key);
                }
                // Another site of the same name (certificates are public): its keys
                // sign nothing of this node's.
                Some(site) if name.names(site) => {}
                _ => {
                    last_error =
                        format!("its certificate names {}, not a site gossiping as {name}", key.identity())
                }
            }
        }
        match named {
            Some(site) => Ok((site, keys)),
            None => Err(last_error),
        }
    }
}

/// `input` filled from what was admitted of its node, as of `now_ms` (a certificate
/// that expired since it was checked unverifies the node).
fn finish(mut input: NodeInput, node: &AdmittedNode, revoked: &RevokedSet, now_ms: u64) -> NodeInput {
    let refusal = match &node.keys {
        Err(why) => Some(why.clone()),
        Ok((_, keys)) if !keys.iter().any(|k| valid_at(k, now_ms)) => {
            Some("its certificate has expired".to_owned())
        }
        Ok((_, keys)) if keys.iter().all(|k| revoked.revokes_key(k).is_some()) => {
            keys.iter().find_map(|k| revoked.revokes_key(k))
        }
        Ok(_) => node.refused.clone(),
    };
    match refusal {
        Some(why) => input.unverified = Some(why),
        None => {
            input.key_values = node.key_values.clone();
            input.forged = node.forged.clone();
        }
    }
    input
}

fn valid_at(key: &VerifyingKey, now_ms: u64) -> bool {
    u64::try_from(key.not_after_unix()).unwrap_or(0).saturating_mul(1000) > now_ms
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Core => "core site",
        Role::Replicant => "replicant",
    }
}

fn check_value(
    keys: &[VerifyingKey],
    site: SiteId,
    generation: u64,
    version: u64,
    key: &str,
    value: &str,
) -> Result<String, Refusal> {
    let Some((payload, signature)) = value.rsplit_once('.') else {
        return Err("it is not signed".into());
    };
    let signature =
        URL_SAFE_NO_PAD.decode(signature).map_err(|_| "its signature is not base64".to_owned())?;
    let message = signed_message(site, generation, version, key, payload);
    if keys.iter().any(|k| k.verifies(&message, &signature)) {
        Ok(payload.to_owned())
    } else {
        Err(format!(
            "its signature does not check against the certificate of site {} (generation {generation}, version {version})",
            site.short()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{Label, encode_value};
    use cairn_transport::{ClusterCa, Credentials};

    const NOW: u64 = 1_800_000_000_000;

    fn now_ms() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
    }

    fn credentials(ca: &ClusterCa, identity: Identity) -> Credentials {
        Credentials::from_pem(ca.cert_pem(), &ca.issue(&identity, 30).unwrap()).unwrap()
    }

    fn summary(role: Role) -> String {
        encode_value(&SiteSummary {
            drain: None,
            role,
            addr: Label::truncated("127.0.0.1:1"),
            version: Label::truncated("t"),
            started_ms: 0,
            zone: None,
            capacity: 100,
            leaving: false,
            draining: false,
            certificate_expires_ms: 0,
        })
    }

    /// A node as `signer` would publish it under `site`: the certificate, then each
    /// payload signed at the next version.
    fn node(signer: &Signer, site: SiteId, payloads: &[(&str, String)]) -> GossipedNode {
        let mut values = vec![GossipedValue {
            key: CERT_KEY.into(),
            value: encode_certificates(&[signer.certificate()]),
            version: 1,
        }];
        for (i, (key, payload)) in payloads.iter().enumerate() {
            let version = i as u64 + 2;
            values.push(GossipedValue {
                key: (*key).into(),
                value: sign_value(signer, site, 5, version, key, payload),
                version,
            });
        }
        GossipedNode {
            name: GossipName::of(site),
            generation: 5,
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            live: true,
            last_seen_ms: None,
            max_version: values.len() as u64,
            values: Some(values),
        }
    }

    fn values(node: &mut GossipedNode) -> &mut Vec<GossipedValue> {
        node.values.as_mut().unwrap()
    }

    /// A site id whose gossip name differs with `n`.
    fn site(n: u128) -> SiteId {
        SiteId((n << 64) | n)
    }

    fn setup() -> (ClusterCa, Verifier) {
        let ca = ClusterCa::generate().unwrap();
        let trust = credentials(&ca, Identity::Site(site(1))).trust().unwrap();
        (ca, Verifier::new(trust))
    }

    #[test]
    fn a_sites_own_signed_values_are_taken_in_as_payloads() {
        let (ca, mut verifier) = setup();
        let signer = credentials(&ca, Identity::Site(site(7))).signer().unwrap();
        let input = node(&signer, site(7), &[(SITE_KEY, summary(Role::Core)), ("load", "AAAA".into())]);
        for _ in 0..2 {
            let admitted = verifier.admit(vec![input.clone()], now_ms());
            assert_eq!(admitted[0].unverified, None);
            assert_eq!(admitted[0].site_id, site(7), "the site its certificate names");
            assert!(admitted[0].forged.is_empty(), "{:?}", admitted[0].forged);
            assert_eq!(admitted[0].key_values[1], ("load".to_owned(), "AAAA".to_owned()));
        }
        // Unchanged since (same max_version): the values need not be handed in again.
        assert!(verifier.has_seen(GossipName::of(site(7)), 5, input.gossip_addr, input.max_version));
        let unchanged = GossipedNode { values: None, ..input.clone() };
        let admitted = verifier.admit(vec![unchanged], now_ms());
        assert_eq!(admitted[0].key_values.len(), 2);
        // A node never seen at that version, handed in without values, is not believed.
        let unseen = GossipedNode { values: None, max_version: 99, ..input };
        assert!(!verifier.has_seen(GossipName::of(site(7)), 5, input.gossip_addr, 99));
        assert!(verifier.admit(vec![unseen], now_ms())[0].unverified.is_some());
    }

    #[test]
    fn another_sites_id_another_role_or_no_certificate_is_unverified() {
        let (ca, mut verifier) = setup();
        let signer = credentials(&ca, Identity::Site(site(7))).signer().unwrap();
        let under_another_id = node(&signer, site(8), &[(SITE_KEY, summary(Role::Core))]);
        let as_a_replicant = node(&signer, site(7), &[(SITE_KEY, summary(Role::Replicant))]);
        let mut without_certificate = node(&signer, site(7), &[(SITE_KEY, summary(Role::Core))]);
        values(&mut without_certificate).remove(0);
        let stranger = ClusterCa::generate().unwrap();
        let foreign = credentials(&stranger, Identity::Site(site(9))).signer().unwrap();
        let of_another_cluster = node(&foreign, site(9), &[(SITE_KEY, summary(Role::Core))]);
        let admitted = verifier
            .admit(vec![under_another_id, as_a_replicant, without_certificate, of_another_cluster], now_ms());
        let why: Vec<String> = admitted.iter().map(|n| n.unverified.clone().unwrap()).collect();
        assert!(why[0].contains("names site/") && why[0].contains("not a site gossiping as"), "{}", why[0]);
        assert!(why[1].contains("replicant but its certificate is a core site's"), "{}", why[1]);
        assert!(why[2].contains("no certificate"), "{}", why[2]);
        assert!(why[3].contains("not a member's of this cluster"), "{}", why[3]);
        assert!(admitted.iter().all(|n| n.key_values.is_empty()));
    }

    #[test]
    fn a_node_is_the_site_its_certificate_names_and_two_sites_may_share_a_name() {
        let (ca, mut verifier) = setup();
        let (a, b) = (SiteId((7 << 64) | 1), SiteId((7 << 64) | 2));
        let signer_a = credentials(&ca, Identity::Site(a)).signer().unwrap();
        let signer_b = credentials(&ca, Identity::Site(b)).signer().unwrap();
        let node_a = node(&signer_a, a, &[(SITE_KEY, summary(Role::Core))]);
        let mut node_b = node(&signer_b, b, &[(SITE_KEY, summary(Role::Core))]);
        assert_eq!(node_a.name, node_b.name);
        // chitchat tells them apart by generation (and address).
        for value in values(&mut node_b).iter_mut().skip(1) {
            let payload = value.value.rsplit_once('.').unwrap().0.to_owned();
            value.value = sign_value(&signer_b, b, 6, value.version, &value.key, &payload);
        }
        node_b.generation = 6;
        let admitted = verifier.admit(vec![node_a.clone(), node_b], now_ms());
        assert_eq!((admitted[0].site_id, admitted[0].unverified.as_ref()), (a, None));
        assert_eq!((admitted[1].site_id, admitted[1].unverified.as_ref()), (b, None));
        assert_eq!(admitted[1].key_values.len(), 1);
        // Values signed for one site do not check under the other's certificate, even
        // where both gossip under one name.
        let mut stolen = node_a;
        values(&mut stolen)[0].value = encode_certificates(&[signer_b.certificate()]);
        let admitted = verifier.admit(vec![stolen], now_ms());
        assert_eq!(admitted[0].site_id, b);
        let why = admitted[0].unverified.as_deref().unwrap_or_default();
        assert!(why.contains("summary is not believed: its signature does not check"), "{why}");
        // A node whose certificate is not believed shows as much as its name says.
        let mut without = node(&signer_a, a, &[]);
        values(&mut without).clear();
        let admitted = verifier.admit(vec![without], now_ms());
        assert_eq!(admitted[0].site_id, GossipName::of(a).partial_site_id());
    }

    #[test]
    fn unsigned_moved_and_replayed_values_are_forged() {
        let (ca, mut verifier) = setup();
        let signer = credentials(&ca, Identity::Site(site(7))).signer().unwrap();
        let mut input = node(
            &signer,
            site(7),
            &[(SITE_KEY, summary(Role::Core)), ("db:a", "AAAA".into()), ("db:b", "BBBB".into())],
        );
        // Unsigned.
        values(&mut input).push(GossipedValue { key: "load".into(), value: "AAAA".into(), version: 9 });
        // Signed for another key.
        values(&mut input)[3].value = values(&mut input)[2].value.clone();
        // Relayed again at a newer version.
        values(&mut input)[2].version = 40;
        let admitted = verifier.admit(vec![input], now_ms());
        assert_eq!(admitted[0].unverified, None);
        let forged: Vec<&str> = admitted[0].forged.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(forged, ["db:a", "db:b", "load"]);
        assert!(admitted[0].forged[2].1.contains("not signed"));
        assert_eq!(admitted[0].key_values.len(), 1, "only the site summary");
    }

    #[test]
    fn a_renewed_key_and_the_one_before_both_check_and_expiry_unverifies() {
        let (ca, mut verifier) = setup();
        let old = credentials(&ca, Identity::Site(site(7))).signer().unwrap();
        let new = credentials(&ca, Identity::Site(site(7))).signer().unwrap();
        let mut input = node(&old, site(7), &[(SITE_KEY, summary(Role::Core))]);
        values(&mut input)[0].value = encode_certificates(&[new.certificate(), old.certificate()]);
        let admitted = verifier.admit(vec![input.clone()], now_ms());
        assert_eq!(admitted[0].unverified, None);
        assert_eq!(admitted[0].key_values.len(), 1);
        let later = verifier.admit(vec![input], NOW.max(now_ms()) + 400 * 86_400_000);
        assert!(later[0].unverified.as_deref().unwrap().contains("expired"));
    }

    #[test]
    fn any_certificate_text_errs_without_panic() {
        let (_, mut verifier) = setup();
        for text in ["", "!!", "AAAA", &encode_certificates(&[]), &"A".repeat(40_000)] {
            let input = GossipedNode {
                name: GossipName::of(site(3)),
                generation: 1,
                gossip_addr: "127.0.0.1:1".parse().unwrap(),
                live: true,
                last_seen_ms: None,
                max_version: 1,
                values: Some(vec![GossipedValue {
                    key: CERT_KEY.into(),
                    value: text.to_owned(),
                    version: 1,
                }]),
            };
            assert!(verifier.admit(vec![input], now_ms())[0].unverified.is_some());
        }
    }
}
