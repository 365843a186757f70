//! Connecting to a cluster, and finding who holds what: a [`Client`] knows some seed
//! sites, learns a db's routes (its settings and, per shard, the live sites holding a
//! ready replica) from any of them, keeps them fresh, and sends each request to the
//! holders of its shard in turn until one answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cairn_transport::{
    Credentials, Endpoint, Request, Response, Routes, TransportConfig, TransportError, WireErrorKind,
};
use cairn_types::DbName;

use crate::error::{Error, Result};

/// How a [`Client`] connects and how patient it is.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sites to ask first (any of the cluster's; more are learned from routes).
    pub seeds: Vec<SocketAddr>,
    /// A connection attempt must finish within this.
    pub connect_timeout: Duration,
    /// One request (sent, handled, answered) must finish within this.
    pub request_timeout: Duration,
    /// Routes older than this are asked for again before they are used.
    pub routes_ttl: Duration,
}

impl ClientConfig {
    /// Defaults for `seeds`: 3 s to connect, 10 s per request, routes kept 5 s.
    pub fn new(seeds: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            seeds: seeds.into_iter().collect(),
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            routes_ttl: Duration::from_secs(5),
        }
    }
}

/// A connection to a cairn cluster. Cheap to clone; clones share connections and
/// routes.
///
/// ```no_run
/// # async fn example() -> Result<(), cairn_client::Error> {
/// use cairn_client::{Client, ClientConfig};
/// let config = ClientConfig::new(["127.0.0.1:7001".parse().unwrap()]);
/// // A directory `cairn cluster issue-cert --client NAME --out DIR` wrote.
/// let client = Client::connect(std::path::Path::new("./app-credentials"), config)?;
/// let routes = client.routes(&"demo".parse()?).await?;
/// println!("demo has {} shards", routes.settings.shards);
/// client.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: Endpoint,
    config: ClientConfig,
    routes: Mutex<HashMap<DbName, (Routes, Instant)>>,
    /// Whether this client made the endpoint (and closes it).
    owns_endpoint: bool,
}

impl Client {
    /// A client with the credentials in `dir` (`ca.pem`, `cert.pem`, `key.pem`, as
    /// `cairn cluster issue-cert --client NAME --out DIR` writes them). Must be called
    /// inside a tokio runtime. Nothing is sent until the first request.
    pub fn connect(dir: &Path, config: ClientConfig) -> Result<Self> {
        let credentials = Credentials::load(dir)?;
        Self::with_credentials(&credentials, config)
    }

    /// A client with credentials already loaded.
    pub fn with_credentials(credentials: &Credentials, config: ClientConfig) -> Result<Self> {
        let Some(first) = config.seeds.first().copied() else {
            return Err(Error::Invalid("no seed site to connect to".into()));
        };
        let transport = TransportConfig {
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            ..TransportConfig::default()
        };
        let endpoint = Endpoint::client(credentials, transport, first)?;
        Ok(Self::new(endpoint, config, true))
    }

    /// A client that sends through an endpoint the caller already has (a site's own, for
    /// the HTTP gateway); closing the client leaves it open.
    pub fn with_endpoint(endpoint: Endpoint, config: ClientConfig) -> Self {
        Self::new(endpoint, config, false)
    }

    fn new(endpoint: Endpoint, config: ClientConfig, owns_endpoint: bool) -> Self {
        let inner = Inner { endpoint, config, routes: Mutex::new(HashMap::new()), owns_endpoint };
        Self { inner: Arc::new(inner) }
    }

    /// How this client connects.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The seed sites.
    pub fn seeds(&self) -> &[SocketAddr] {
        &self.inner.config.seeds
    }

    /// The endpoint requests go through.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The db's routes: its settings and, per shard, the live sites with a ready
    /// replica. Cached for [`ClientConfig::routes_ttl`].
    pub async fn routes(&self, db: &DbName) -> Result<Routes> {
        if let Some(routes) = self.cached(db) {
            return Ok(routes);
        }
        self.refresh_routes(db).await
    }

    fn cached(&self, db: &DbName) -> Option<Routes> {
        let cache = self.inner.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let (routes, at) = cache.get(db)?;
        (at.elapsed() < self.inner.config.routes_ttl).then(|| routes.clone())
    }

    /// Asks for the db's routes again: the seeds first, then every site the routes held
    /// named, until one answers.
    pub async fn refresh_routes(&self, db: &DbName) -> Result<Routes> {
        let mut sites = self.inner.config.seeds.clone();
        if let Some((known, _)) = self.inner.routes.lock().unwrap_or_else(PoisonError::into_inner).get(db) {
            for site in known.holders.iter().flatten() {
                if !sites.contains(site) {
                    sites.push(*site);
                }
            }
        }
        let request = Request::Routes { db: db.clone() };
        let mut failures = Vec::new();
        for at in sites {
            match self.attempt(at, &request).await {
                Attempt::Answered(Response::Routes(routes)) => {
                    let mut cache = self.inner.routes.lock().unwrap_or_else(PoisonError::into_inner);
                    cache.insert(db.clone(), (routes.clone(), Instant::now()));
                    return Ok(routes);
                }
                Attempt::Answered(Response::Rejected { reason }) => return Err(Error::Rejected(reason)),
                Attempt::Answered(other) => return Err(unexpected("routes", at, other)),
                Attempt::Failed(error) => return Err(error),
                Attempt::Passed(why, _) | Attempt::Unknown(why) => failures.push(why),
            }
        }
        Err(Error::Unreachable(format!("no site answered with the routes of {db}: {}", failures.join("; "))))
    }

    /// Forgets the db's routes (after a holder said it no longer holds a shard).
    pub(crate) fn forget_routes(&self, db: &DbName) {
        if let Some((_, at)) = self.inner.routes.lock().unwrap_or_else(PoisonError::into_inner).get_mut(db) {
            *at = Instant::now().checked_sub(self.inner.config.routes_ttl).unwrap_or(*at);
        }
    }

    /// The sites to try for `shard` of `routes`, in order (the holders, or the seeds when
    /// the routes name none: a seed says where to go).
    /// Each shard starts at another holder (the shard's index, rotated), so the writes
    /// of a db with several shards spread over the sites holding them: any ready replica
    /// takes writes, and each site then commits its own share.
    pub(crate) fn holders(&self, routes: &Routes, shard: u32) -> Vec<SocketAddr> {
        let mut holders = routes.holders.get(shard as usize).cloned().unwrap_or_default();
        if holders.is_empty() {
            return self.inner.config.seeds.clone();
        }
        holders.sort();
        let n = holders.len();
        holders.rotate_left(shard as usize % n);
        holders
    }

    /// Sends `request` to `at` and classes the outcome.
    pub(crate) async fn attempt(&self, at: SocketAddr, request: &Request) -> Attempt {
        classify(at, self.inner.endpoint.request(at, request).await)
    }

    /// Closes the connections (if the client made its endpoint), waiting at most a
    /// moment for the sites to hear it.
    pub async fn close(&self) {
        if self.inner.owns_endpoint {
            self.inner.endpoint.close_within(Duration::from_millis(200)).await;
        }
    }
}

/// How one attempt at one site ended.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// An answer to use.
    Answered(Response),
    /// Nothing was done there; try the next site (or one of those it names).
    Passed(String, Vec<SocketAddr>),
    /// The request may have been carried out there (it was sent, no answer came).
    Unknown(String),
    /// An answer that no other site would change (forbidden, say).
    Failed(Error),
}

/// Classes one request's outcome at `at`.
pub(crate) fn classify(at: SocketAddr, outcome: Result<Response, TransportError>) -> Attempt {
    match outcome {
        Ok(Response::NotHere { reason, holders }) => Attempt::Passed(format!("{at}: {reason}"), holders),
        Ok(answer) => Attempt::Answered(answer),
        Err(error @ (TransportError::Unreachable { .. } | TransportError::Backoff { .. })) => {
            Attempt::Passed(error.to_string(), Vec::new())
        }
        Err(TransportError::Remote { error, .. }) => match error.kind {
            WireErrorKind::Busy | WireErrorKind::Unavailable => {
                Attempt::Passed(format!("{at}: {}", error.message), Vec::new())
            }
            WireErrorKind::OutcomeUnknown => Attempt::Unknown(format!("{at}: {}", error.message)),
            WireErrorKind::Forbidden => Attempt::Failed(Error::Forbidden(error.message)),
            _ => Attempt::Failed(Error::Rejected(format!("{at}: {}", error.message))),
        },
        Err(error) => Attempt::Unknown(format!("{at}: {error}")),
    }
}

/// An answer of the wrong kind.
pub(crate) fn unexpected(what: &str, at: SocketAddr, answer: Response) -> Error {
    Error::Rejected(format!("{at} answered {what} with {answer:?}"))
}
