//! Crash safety with real processes: a child writes (log appends, plans advancing) in a
//! loop and is killed with SIGKILL at random moments, many times. After each kill the
//! parent reopens the store and checks that every acknowledged write is there, nothing
//! half-written is visible, and every plan sits at a valid step.
//!
//! The child is this same test binary, started on the ignored `crash_child` test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_inventory::{
    AdvanceOutcome, ClusterId, DbName, Inventory, InventoryConfig, OfferOutcome, Plan, PlanEnd, PlanId,
    PlanOrigin, SiteId, Step,
};

const CLUSTER: ClusterId = ClusterId(0xc7a5);
const DIR_VAR: &str = "CAIRN_CRASH_CHILD_DIR";
const EPOCH_VAR: &str = "CAIRN_CRASH_CHILD_EPOCH";
const STEPS: u32 = 5;

fn db() -> DbName {
    DbName::new("crash").unwrap()
}

fn plan(id: u128) -> Plan {
    Plan {
        db: db(),
        plan_id: PlanId(id),
        priority: 1,
        origin: PlanOrigin::Automatic { planner: SiteId(1) },
        steps: (0..STEPS).map(|shard| Step::RemoveReplica { shard }).collect(),
    }
}

/// The child: writes until killed, printing one line after each commit.
#[test]
#[ignore = "run by sigkill_at_random_moments_loses_nothing_acknowledged as a child process"]
fn crash_child() {
    let dir = std::env::var(DIR_VAR).expect("set by the parent test");
    let epoch: u64 = std::env::var(EPOCH_VAR).unwrap().parse().unwrap();
    let inv = Inventory::open(&dir, CLUSTER, InventoryConfig::default()).unwrap();
    // Resume the plan a previous child left, as the executor would.
    if let Some(pending) = inv.pending_plan(&db()).unwrap() {
        for step in pending.done..pending.total() {
            inv.advance(&db(), pending.plan_id, step).unwrap();
            println!("V {} {step}", pending.plan_id.0);
        }
    }
    println!("ready");
    for n in 0u64.. {
        let batch = epoch * 1_000_000 + n;
        let k = 1 + (n * 7 + epoch) % 40;
        let payloads: Vec<Vec<u8>> = (0..k).map(|j| format!("{batch}:{j}:{k}").into_bytes()).collect();
        inv.append(&db(), 0, &payloads).unwrap();
        println!("A {batch} {k}");
        if n % 3 == 0 {
            let id = u128::from(batch) + 1;
            assert_eq!(inv.offer(&plan(id)).unwrap(), OfferOutcome::Accepted);
            println!("O {id}");
            for step in 0..STEPS {
                let outcome = inv.advance(&db(), PlanId(id), step).unwrap();
                assert_ne!(outcome, AdvanceOutcome::Stale);
                println!("V {id} {step}");
            }
        }
    }
}

/// What the children acknowledged.
#[derive(Default)]
struct Acked {
    batches: BTreeMap<u64, u64>,
    /// Per plan, steps acknowledged done.
    plans: BTreeMap<u128, u32>,
}

impl Acked {
    fn take(&mut self, line: &str) {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[..] {
            ["A", batch, k] => {
                self.batches.insert(batch.parse().unwrap(), k.parse().unwrap());
            }
            ["O", id] => {
                self.plans.insert(id.parse().unwrap(), 0);
            }
            ["V", id, step] => {
                self.plans.insert(id.parse().unwrap(), step.parse::<u32>().unwrap() + 1);
            }
            _ => {}
        }
    }
}

fn check(dir: &Path, acked: &Acked) -> usize {
    let inv = Inventory::open(dir, CLUSTER, InventoryConfig::default()).unwrap();
    assert!(inv.verify().unwrap().corrupt.is_empty());
    let entries = inv.read_log(&db(), 0, 0, usize::MAX).unwrap().entries;
    let mut per_batch: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for e in &entries {
        assert!(ids.insert(e.entry.id), "duplicate entry {:?}", e.entry.id);
        let text = String::from_utf8(e.entry.payload.clone()).unwrap();
        let [batch, j, k]: [u64; 3] =
            text.split(':').map(|x| x.parse().unwrap()).collect::<Vec<_>>().try_into().unwrap();
        let seen = per_batch.entry(batch).or_default();
        seen.insert(j);
        assert!(j < k);
    }
    for (batch, seen) in &per_batch {
        // Nothing half-written: a batch is all there or not there.
        let k = 1 + (batch % 1_000_000 * 7 + batch / 1_000_000) % 40;
        assert_eq!(seen.len() as u64, k, "batch {batch} is half-written");
    }
    for (batch, k) in &acked.batches {
        assert_eq!(per_batch.get(batch).map(|s| s.len() as u64), Some(*k), "acknowledged batch {batch} lost");
    }
    // Plans: the pending one sits at a valid step no earlier than acknowledged; the ones
    // acknowledged complete are in the history as completed.
    if let Some(p) = inv.pending_plan(&db()).unwrap() {
        assert!(p.done < STEPS && p.total() == STEPS);
        assert_eq!(p.remaining, plan(p.plan_id.0).steps[p.done as usize..]);
        if let Some(done) = acked.plans.get(&p.plan_id.0) {
            assert!(p.done >= *done, "plan went back from step {done} to {}", p.done);
        }
    }
    let history = inv.plan_history(&db()).unwrap();
    for (id, done) in &acked.plans {
        if *done == STEPS
            && let Some(h) = history.iter().find(|h| h.plan_id.0 == *id)
        {
            assert_eq!(h.end, PlanEnd::Completed);
        }
    }
    entries.len()
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked = Acked::default();
    let rounds = 25;
    let started = Instant::now();
    for epoch in 1..=rounds {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .env(EPOCH_VAR, epoch.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
        });
        // Kill somewhere between 20 and 250 ms after start, at a moment we don't choose.
        let wait = 20 + (rand::random::<u64>() % 230);
        std::thread::sleep(Duration::from_millis(wait));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            acked.take(&line);
        }
        check(dir.path(), &acked);
    }
    let entries = check(dir.path(), &acked);
    assert!(!acked.batches.is_empty(), "the children never got to write");
    eprintln!(
        "{rounds} kills in {:?}: {} batches and {} plans acknowledged, {entries} entries verified",
        started.elapsed(),
        acked.batches.len(),
        acked.plans.len()
    );
}
