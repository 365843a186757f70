//! The store is a standard LMDB environment: Debian's `mdb_stat` (lmdb-utils) reads it.
//!
//! heed builds LMDB 0.9.70 from the mdb.master branch; its lock-file layout differs from
//! Debian's lmdb-utils (0.9.24), which therefore refuse a *running* site's environment
//! with MDB_VERSION_MISMATCH. The data file format is the same, so the tools read a
//! stopped site's data dir (they re-create the lock file, and cairn re-creates it back).

use std::path::Path;
use std::process::{Command, Output};

use cairn_inventory::{ClusterId, DbName, Inventory, InventoryConfig};

fn mdb_stat(args: &[&str], dir: &Path) -> Output {
    Command::new("mdb_stat")
        .args(args)
        .arg(dir)
        .output()
        .expect("mdb_stat not found: install Debian's lmdb-utils (.ci/run does)")
}

#[test]
fn mdb_stat_reads_the_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let name = DbName::new("stat").unwrap();
    let site_id = {
        let inv = Inventory::open(dir.path(), ClusterId(4), InventoryConfig::default()).unwrap();
        let payloads: Vec<String> = (0..1234).map(|i| format!("message {i}")).collect();
        inv.append(&name, 0, &payloads).unwrap();
        inv.identity().site_id
    };

    let output = mdb_stat(&["-s", "log_entries"], dir.path());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "mdb_stat failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("Entries: 1234"), "mdb_stat said:\n{text}");

    let output = mdb_stat(&["-a"], dir.path());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for table in
        ["meta", "dbs", "replicas", "plans", "plan_history", "log_entries", "log_frontiers", "log_shards"]
    {
        assert!(text.contains(&format!("Status of {table}")), "{table} missing from:\n{text}");
    }

    // The site opens its data dir again after the tool has been there.
    let inv = Inventory::open(dir.path(), ClusterId(4), InventoryConfig::default()).unwrap();
    assert_eq!(inv.identity().site_id, site_id);
    assert_eq!(inv.log_stats(&name, 0).unwrap().entries, 1234);
    assert!(inv.verify().unwrap().corrupt.is_empty());
}
