//! Opening a data dir, and running LMDB transactions on it.
//!
//! One LMDB environment per data dir holds every table. The data dir is locked with a
//! lock file so a second process (or a second handle) cannot open it. Every transaction
//! goes through [`Inventory::write`] or [`Inventory::read`], which hold a gate that lets
//! the map grow safely: when a write hits LMDB's map-full condition, it is aborted, the
//! map is enlarged while no transaction runs, and the write is tried again.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions, MdbError, RoTxn, RwTxn, WithoutTls};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::{InventoryError, Result};
use crate::ids::{ClusterId, SiteId};
use crate::keys;
use crate::records::{DrainOrder, Identity};

/// The store format this build reads and writes. Bump it when a table's layout changes
/// and teach `open` to migrate the older one.
pub const STORE_FORMAT: u32 = 5;

/// The lock file inside a data dir.
pub const LOCK_FILE: &str = "cairn.lock";

const MIB: usize = 1 << 20;

/// How the LMDB map is sized and how much history is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryConfig {
    /// The map size to start with, in bytes (a multiple of 1 MiB).
    pub map_size: usize,
    /// How much to grow the map by when it is full, in bytes; 0 disables growth and a
    /// full map becomes [`InventoryError::MapFull`].
    pub map_growth: usize,
    /// The map never grows past this many bytes.
    pub max_map_size: usize,
    /// Finished plans kept per db in the plan history.
    pub plan_history_limit: usize,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        Self { map_size: 64 * MIB, map_growth: 256 * MIB, max_map_size: 1 << 40, plan_history_limit: 32 }
    }
}

impl InventoryConfig {
    /// Checks that the settings make sense together.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what, why: &str| Err(InventoryError::InvalidSetting { what, why: why.into() });
        if self.map_size < MIB || !self.map_size.is_multiple_of(MIB) {
            return invalid("map_size", "must be a multiple of 1 MiB, at least 1 MiB");
        }
        if !self.map_growth.is_multiple_of(MIB) {
            return invalid("map_growth", "must be a multiple of 1 MiB (0 disables growth)");
        }
        if self.max_map_size < self.map_size {
            return invalid("max_map_size", "must be at least map_size");
        }
        if self.plan_history_limit == 0 || self.plan_history_limit > 10_000 {
            return invalid("plan_history_limit", "must be between 1 and 10000");
        }
        Ok(())
    }
}

pub(crate) type Table = Database<'static, Bytes, Bytes>;

/// The named LMDB databases of an inventory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tables {
    /// `format` and `identity`.
    pub(crate) meta: Table,
    /// db key → `DbRecord`.
    pub(crate) dbs: Table,
    /// shard key → `ReplicaRecord`.
    pub(crate) replicas: Table,
    /// db key → `PendingPlan`.
    pub(crate) plans: Table,
    /// db key ++ n → `PlanHistoryEntry`.
    pub(crate) plan_history: Table,
    /// shard key ++ arrival → `StoredEntry`.
    pub(crate) log_entries: Table,
    /// shard key ++ origin → `FrontierRecord`.
    pub(crate) log_frontiers: Table,
    /// shard key ++ origin ++ seq → arrival, for entries held above the frontier.
    pub(crate) log_early: Table,
    /// shard key → `ShardLogMeta`.
    pub(crate) log_shards: Table,
    /// shard key ++ upstream site → the upstream's arrival number up to which this
    /// replica has received everything it lacked (the resume point of a pull).
    pub(crate) log_cursors: Table,
    /// shard key ++ origin ++ seq → arrival ++ hidden flag, for every entry held.
    pub(crate) log_by_origin: Table,
    /// shard key ++ fnv1a64(topic) ++ origin ++ seq → arrival, for visible entries.
    pub(crate) log_topics: Table,
    /// shard key ++ [len] producer name ++ its number → the visible entry's id.
    pub(crate) log_producers: Table,
}

/// Table names, in the order of the array `Tables` is built from.
pub(crate) const TABLE_NAMES: [&str; 13] = [
    "meta",
    "dbs",
    "replicas",
    "plans",
    "plan_history",
    "log_entries",
    "log_frontiers",
    "log_early",
    "log_shards",
    "log_cursors",
    "log_by_origin",
    "log_topics",
    "log_producers",
];

impl Tables {
    fn from_array(t: [Table; 13]) -> Self {
        let [
            meta,
            dbs,
            replicas,
            plans,
            plan_history,
            log_entries,
            log_frontiers,
            log_early,
            log_shards,
            log_cursors,
            log_by_origin,
            log_topics,
            log_producers,
        ] = t;
        Self {
            meta,
            dbs,
            replicas,
            plans,
            plan_history,
            log_entries,
            log_frontiers,
            log_early,
            log_shards,
            log_cursors,
            log_by_origin,
            log_topics,
            log_producers,
        }
    }

    /// Every table with its name, for whole-store scans.
    pub(crate) fn named(&self) -> [(&'static str, Table); 13] {
        let t = [
            self.meta,
            self.dbs,
            self.replicas,
            self.plans,
            self.plan_history,
            self.log_entries,
            self.log_frontiers,
            self.log_early,
            self.log_shards,
            self.log_cursors,
            self.log_by_origin,
            self.log_topics,
            self.log_producers,
        ];
        std::array::from_fn(|i| (TABLE_NAMES[i], t[i]))
    }
}

pub(crate) const FORMAT_KEY: &[u8] = b"format";
const IDENTITY_KEY: &[u8] = b"identity";
const DRAINING_KEY: &[u8] = b"draining";
const DRAIN_ORDER_KEY: &[u8] = b"drain_order";

/// A site's inventory: its identity, dbs, replicas, plans and shard logs, in one LMDB
/// environment that only this site writes.
pub struct Inventory {
    env: Env<WithoutTls>,
    pub(crate) tables: Tables,
    identity: Identity,
    pub(crate) config: InventoryConfig,
    dir: PathBuf,
    /// Read-held by every transaction, write-held while the map is resized.
    gate: RwLock<()>,
    /// Write transactions committed since the inventory was opened.
    commits: AtomicU64,
    /// Held (flock) for as long as the inventory is open.
    _lock: File,
}

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventory")
            .field("dir", &self.dir)
            .field("site_id", &self.identity.site_id)
            .finish_non_exhaustive()
    }
}

enum OpenMode {
    /// Create the store if the data dir has none, for this cluster.
    CreateFor(ClusterId),
    /// As `CreateFor`, with this site id (a site rebuilding a lost inventory); an
    /// existing store must carry the same one.
    CreateAs(ClusterId, SiteId),
    /// Only open a store that exists, whatever its cluster.
    Existing,
}

impl Inventory {
    /// Opens the inventory in `dir`, creating the dir and a new site identity (for
    /// `cluster`) if there is none. Refuses a data dir of another cluster or of a newer
    /// store format without writing anything.
    pub fn open(dir: impl AsRef<Path>, cluster: ClusterId, config: InventoryConfig) -> Result<Self> {
        Self::open_with(dir.as_ref(), OpenMode::CreateFor(cluster), config)
    }

    /// Like [`Self::open`], but a new store takes `site` as its id, and an existing one
    /// must already have it: how a site whose inventory was lost comes back as itself.
    pub fn open_as(
        dir: impl AsRef<Path>,
        cluster: ClusterId,
        site: SiteId,
        config: InventoryConfig,
    ) -> Result<Self> {
        Self::open_with(dir.as_ref(), OpenMode::CreateAs(cluster, site), config)
    }

    /// Opens the inventory that exists in `dir`, whatever cluster it belongs to (for
    /// inspection tools). Never creates one.
    pub fn open_existing(dir: impl AsRef<Path>, config: InventoryConfig) -> Result<Self> {
        Self::open_with(dir.as_ref(), OpenMode::Existing, config)
    }

    fn open_with(dir: &Path, mode: OpenMode, config: InventoryConfig) -> Result<Self> {
        config.validate()?;
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| InventoryError::Io { path, source }
        };
        let data_file = dir.join("data.mdb");
        let exists = data_file.exists();
        match mode {
            OpenMode::Existing if !exists => {
                return Err(InventoryError::NotAnInventory { path: dir.to_owned() });
            }
            OpenMode::CreateFor(_) | OpenMode::CreateAs(..) => {
                std::fs::create_dir_all(dir).map_err(io_err(dir))?
            }
            OpenMode::Existing => {}
        }
        let lock = lock_dir(dir)?;

        // Never open with a map smaller than the data already there.
        let on_disk = if exists {
            std::fs::metadata(&data_file).map_err(io_err(&data_file))?.len() as usize
        } else {
            0
        };
        let map_size = config.map_size.max(on_disk.next_multiple_of(MIB));
        // SAFETY: the lock file guarantees no other cairn process maps this file, and
        // cairn never modifies it other than through LMDB.
        let env = unsafe {
            EnvOpenOptions::new()
                .read_txn_without_tls()
                .map_size(map_size)
                .max_dbs(TABLE_NAMES.len() as u32 + 2)
                .open(dir)
        }
        .map_err(|e| classify(e, dir))?;

        let existing = open_tables(&env).map_err(|e| classify_err(e, dir))?;
        let (tables, identity) = match (existing, mode) {
            (Some(tables), mode) => {
                let identity = check_identity(&env, &tables, dir, mode)?;
                (tables, identity)
            }
            (None, OpenMode::Existing) => {
                return Err(InventoryError::NotAnInventory { path: dir.to_owned() });
            }
            (None, OpenMode::CreateFor(cluster)) => {
                create_store(&env, cluster, SiteId::random()).map_err(|e| classify_err(e, dir))?
            }
            (None, OpenMode::CreateAs(cluster, site)) => {
                create_store(&env, cluster, site).map_err(|e| classify_err(e, dir))?
            }
        };
        tracing::debug!(dir = %dir.display(), site = %identity.site_id, "inventory open");
        Ok(Self {
            env,
            tables,
            identity,
            config,
            dir: dir.to_owned(),
            gate: RwLock::new(()),
            commits: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// This site's identity.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// Marks this site as draining (being decommissioned: planners place nothing here
    /// and move what it holds elsewhere), or not. Durable.
    pub fn set_draining(&self, on: bool) -> Result<()> {
        self.write(|txn| put_record(self.tables.meta, txn, DRAINING_KEY, &on, "draining"))
    }

    /// Stores an operator's drain order (its seal checked by the caller) and sets the
    /// draining flag it orders, in one transaction.
    pub fn put_drain_order(&self, order: &DrainOrder) -> Result<()> {
        self.write(|txn| {
            put_record(self.tables.meta, txn, DRAIN_ORDER_KEY, order, "drain order")?;
            put_record(self.tables.meta, txn, DRAINING_KEY, &order.on, "draining")
        })
    }

    /// The latest drain order this site took, if any.
    pub fn drain_order(&self) -> Result<Option<DrainOrder>> {
        self.read(|txn| get_record(self.tables.meta, txn, DRAIN_ORDER_KEY, "meta[drain_order]"))
    }

    /// Whether this site is draining (see [`Self::set_draining`]).
    pub fn draining(&self) -> Result<bool> {
        self.read(|txn| {
            Ok(get_record(self.tables.meta, txn, DRAINING_KEY, "meta[draining]")?.unwrap_or(false))
        })
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current LMDB map size in bytes.
    pub fn map_size(&self) -> usize {
        self.env.info().map_size
    }

    /// How many write transactions this process has committed to the inventory since it
    /// opened it. Only this process writes the inventory, so a reader that finds the
    /// same count as at its last read would read the same state: it can skip the read.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    /// Runs `f` in a read transaction.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&RoTxn<'_, WithoutTls>) -> Result<R>) -> Result<R> {
        let _gate = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let txn = self.env.read_txn().map_err(|e| classify(e, &self.dir))?;
        f(&txn).map_err(|e| classify_err(e, &self.dir))
    }

    /// Runs `f` in a write transaction and commits it durably. `f` may run more than
    /// once: if the map fills up, the transaction is aborted, the map grows, and `f` runs
    /// again from the start.
    pub(crate) fn write<R>(&self, mut f: impl FnMut(&mut RwTxn<'_>) -> Result<R>) -> Result<R> {
        loop {
            let attempt = {
                let _gate = self.gate.read().unwrap_or_else(PoisonError::into_inner);
                let mut txn = self.env.write_txn().map_err(|e| classify(e, &self.dir))?;
                match f(&mut txn) {
                    Ok(value) => txn
                        .commit()
                        .map(|()| {
                            self.commits.fetch_add(1, Ordering::Release);
                            value
                        })
                        .map_err(|e| classify(e, &self.dir)),
                    Err(err) => Err(err),
                }
            };
            match attempt {
                Err(InventoryError::Lmdb(heed::Error::Mdb(MdbError::MapFull))) => self.grow_map()?,
                other => return other.map_err(|e| classify_err(e, &self.dir)),
            }
        }
    }

    fn grow_map(&self) -> Result<()> {
        let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        let current = self.env.info().map_size;
        let next = current.saturating_add(self.config.map_growth).next_multiple_of(MIB);
        if self.config.map_growth == 0 || next > self.config.max_map_size {
            return Err(InventoryError::MapFull { map_size: current });
        }
        // SAFETY: we hold the gate for writing, and every transaction of this process
        // holds it for reading, so no transaction is active.
        unsafe { self.env.resize(next) }.map_err(|e| classify(e, &self.dir))?;
        tracing::info!(from = current, to = next, dir = %self.dir.display(), "inventory map grown");
        Ok(())
    }
}

/// How long `open` keeps trying a held lock before calling the data dir in use. A lock
/// can be held for a moment by a child process forked (but not yet exec'd) while the
/// previous holder closed it; a real second site holds it for good.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes the data dir's lock file, or says who has it.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| InventoryError::Io { path: path.clone(), source })?;
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if started.elapsed() < LOCK_PATIENCE => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(InventoryError::Locked { path: dir.to_owned(), lock: path });
            }
            Err(TryLockError::Error(source)) => return Err(InventoryError::Io { path, source }),
        }
    }
}

/// How many tables the first stores had; tables after these are created when an older
/// store is opened (they start empty), so such a store needs no migration.
const FIRST_TABLES: usize = 9;

/// Opens every table of an existing store; `None` if the store was never initialised.
fn open_tables(env: &Env<WithoutTls>) -> Result<Option<Tables>> {
    match open_tables_once(env) {
        Err(InventoryError::Corrupt { record, .. }) if record.starts_with("table ") => {
            let missing = &record["table ".len()..];
            if TABLE_NAMES[FIRST_TABLES..].contains(&missing) {
                let wtxn = env.write_txn()?;
                env.create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_> {
                    for name in &TABLE_NAMES[FIRST_TABLES..] {
                        opener.create_database::<Bytes, Bytes>(wtxn, Some(name))?;
                    }
                    Ok(CommitOrAbort::<(), ()>::Commit(()))
                })?;
            }
            open_tables_once(env)
        }
        other => other,
    }
}

fn open_tables_once(env: &Env<WithoutTls>) -> Result<Option<Tables>> {
    let rtxn = env.read_txn()?;
    let opened = env.open_databases_and_commit(rtxn, |opener, rtxn| -> Result<_> {
        let Some(meta) = opener.open_database::<Bytes, Bytes>(rtxn, Some(TABLE_NAMES[0]))? else {
            return Ok(CommitOrAbort::Abort(None));
        };
        let mut tables = vec![meta];
        for name in &TABLE_NAMES[1..] {
            match opener.open_database::<Bytes, Bytes>(rtxn, Some(name))? {
                Some(table) => tables.push(table),
                None => return Ok(CommitOrAbort::Abort(Some(*name))),
            }
        }
        let tables: [_; 13] = tables.try_into().map_err(|_| heed::Error::Mdb(MdbError::Invalid))?;
        Ok(CommitOrAbort::Commit(tables))
    })?;
    match opened {
        CommitOrAbort::Commit(tables) => Ok(Some(Tables::from_array(tables))),
        CommitOrAbort::Abort(None) => Ok(None),
        CommitOrAbort::Abort(Some(name)) => Err(InventoryError::Corrupt {
            record: format!("table {name}"),
            source: codec::CodecError::Decode("table missing from the store".into()),
        }),
    }
}

/// Creates every table, the format record and a fresh identity, in one transaction.
fn create_store(env: &Env<WithoutTls>, cluster_id: ClusterId, site_id: SiteId) -> Result<(Tables, Identity)> {
    let identity = Identity { site_id, cluster_id, created_ms: now_ms() };
    let wtxn = env.write_txn()?;
    let tables = env
        .create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_> {
            let mut tables = Vec::with_capacity(TABLE_NAMES.len());
            for name in TABLE_NAMES {
                tables.push(opener.create_database::<Bytes, Bytes>(wtxn, Some(name))?);
            }
            put_record(tables[0], wtxn, FORMAT_KEY, &STORE_FORMAT, "format")?;
            put_record(tables[0], wtxn, IDENTITY_KEY, &identity, "identity")?;
            let tables: [_; 13] = tables.try_into().map_err(|_| heed::Error::Mdb(MdbError::Invalid))?;
            Ok(CommitOrAbort::<_, ()>::Commit(tables))
        })?
        .unwrap_commit();
    Ok((Tables::from_array(tables), identity))
}

/// Reads the format and identity records and checks them against what the caller wants.
fn check_identity(env: &Env<WithoutTls>, tables: &Tables, dir: &Path, mode: OpenMode) -> Result<Identity> {
    let rtxn = env.read_txn().map_err(|e| classify(e, dir))?;
    let format: u32 = get_record(tables.meta, &rtxn, FORMAT_KEY, "meta[format]")?
        .ok_or_else(|| InventoryError::NotAnInventory { path: dir.to_owned() })?;
    if format > STORE_FORMAT {
        return Err(InventoryError::NewerFormat {
            path: dir.to_owned(),
            found: format,
            supported: STORE_FORMAT,
        });
    }
    if format < STORE_FORMAT {
        drop(rtxn);
        let rewritten = env
            .write_txn()
            .map_err(InventoryError::from)
            .and_then(|mut wtxn| {
                let n = crate::migrate::upgrade(tables, &mut wtxn, format)?;
                put_record(tables.meta, &mut wtxn, FORMAT_KEY, &STORE_FORMAT, "format")?;
                wtxn.commit()?;
                Ok(n)
            })
            .map_err(|e| classify_err(e, dir))?;
        tracing::info!(dir = %dir.display(), from = format, to = STORE_FORMAT, rewritten, "store format upgraded");
        return check_identity(env, tables, dir, mode);
    }
    let identity: Identity = get_record(tables.meta, &rtxn, IDENTITY_KEY, "meta[identity]")?
        .ok_or_else(|| InventoryError::NotAnInventory { path: dir.to_owned() })?;
    let (expected, site) = match mode {
        OpenMode::CreateFor(cluster) => (Some(cluster), None),
        OpenMode::CreateAs(cluster, site) => (Some(cluster), Some(site)),
        OpenMode::Existing => (None, None),
    };
    if let Some(expected) = expected
        && expected != identity.cluster_id
    {
        return Err(InventoryError::WrongCluster {
            path: dir.to_owned(),
            expected,
            found: identity.cluster_id,
        });
    }
    if let Some(expected) = site
        && expected != identity.site_id
    {
        return Err(InventoryError::WrongSite { path: dir.to_owned(), expected, found: identity.site_id });
    }
    Ok(identity)
}

/// Encodes `value` in the checked envelope and stores it.
pub(crate) fn put_record<T: Serialize + ?Sized>(
    table: Database<'_, Bytes, Bytes>,
    txn: &mut RwTxn<'_>,
    key: &[u8],
    value: &T,
    what: &'static str,
) -> Result<()> {
    let bytes = codec::encode_checked(value).map_err(|source| InventoryError::Encode { what, source })?;
    table.put(txn, key, &bytes)?;
    Ok(())
}

/// Reads and checks one record; `record` names it in errors.
pub(crate) fn get_record<T: DeserializeOwned>(
    table: Table,
    txn: &RoTxn<'_>,
    key: &[u8],
    record: &str,
) -> Result<Option<T>> {
    match table.get(txn, key)? {
        None => Ok(None),
        Some(bytes) => decode_record(bytes, || record.to_owned()).map(Some),
    }
}

/// Decodes a checked record, naming it (lazily) if it is corrupt.
pub(crate) fn decode_record<T: DeserializeOwned>(bytes: &[u8], record: impl FnOnce() -> String) -> Result<T> {
    codec::decode_checked(bytes).map_err(|source| InventoryError::Corrupt { record: record(), source })
}

/// Decodes a record found by a scan; a corrupt one is logged and skipped.
pub(crate) fn decode_or_skip<T: DeserializeOwned>(table: &str, key: &[u8], bytes: &[u8]) -> Option<T> {
    match codec::decode_checked(bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(record = %keys::describe(table, key), %error, "skipping corrupt record");
            None
        }
    }
}

/// Turns LMDB errors that users can act on into their own variants.
fn classify(err: heed::Error, dir: &Path) -> InventoryError {
    match err {
        heed::Error::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => {
            InventoryError::NoSpace { path: dir.to_owned() }
        }
        // LMDB reports a short write as EIO (`mdb_page_flush`), and a disk that fills up
        // part-way through a commit writes short: EIO with no room left is a full disk.
        heed::Error::Io(io) if io.raw_os_error() == Some(libc::EIO) && nearly_full(dir) => {
            InventoryError::NoSpace { path: dir.to_owned() }
        }
        heed::Error::Io(io) => InventoryError::Io { path: dir.to_owned(), source: io },
        other => InventoryError::Lmdb(other),
    }
}

/// Whether the filesystem holding `dir` has less than 1 MiB left for us.
fn nearly_full(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` is valid for writes of a
    // `statvfs`, which the call fills in when it answers 0.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: statvfs answered 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    (stat.f_bavail as u128) * (stat.f_frsize as u128) < 1 << 20
}

fn classify_err(err: InventoryError, dir: &Path) -> InventoryError {
    match err {
        InventoryError::Lmdb(e) => classify(e, dir),
        other => other,
    }
}

pub(crate) use cairn_types::now_ms;
