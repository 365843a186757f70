//! The control loops in a deterministic simulation (`sim/`): random schedules of joins,
//! kills, restarts, cuts, lossy links, db creations, factor changes and operator moves,
//! with invariants checked after every round (no acknowledged write lost; a shard never
//! below its complete replicas of before, except down to its factor; never two replicas
//! of a shard on one site), then faults stop and the cluster must settle: every plan
//! ended, every view the same, every shard ready at its factor, nothing left to move.
//!
//! `CAIRN_SIM_SEEDS=N` runs N seeds (default 12) from `CAIRN_SIM_FIRST_SEED` (default
//! 0); a failing seed is printed with the end of its log and how to replay it. Seeds
//! that once failed are kept in [`REGRESSIONS`].

mod sim;

use sim::World;

/// Rounds of faults and operator actions (100 ms each: 90 s simulated).
const CHAOS_ROUNDS: u64 = 900;
/// Rounds the cluster has to settle once faults stop.
const SETTLE_LIMIT: u64 = 3_000;

/// Seeds that found a bug, run every time:
/// - 2: a handover whose target never took its part of the move (the planner gave its
///   offer up) waited for ever, and with a plan in flight automation planned nothing
///   else again; now such a handover fails after `ORPHANED_AFTER_MS`.
/// - 9 (and 7): not a bug of the site but of the model: a replica was left
///   `handing_over` by a plan replaced before it finished, because the simulated site
///   lacked what `Inventory::offer` does in the same transaction (undo the replaced
///   plan's handovers); `sim/site.rs` now models it.
/// - 28: a catch-up planned from a replica that then moved away waited for ever for
///   that upstream; now it copies from the shard's holders instead (`catch_up_from`).
/// - 64 (and 66): a shard whose site never took its part of the db's allocation (it
///   died) stayed with no replica for ever — allocation looked only at dbs with no
///   replica at all; now the shards no site holds are allocated.
/// - 188: a trim of two extras of one shard handed the first to the second, which was
///   itself handed on in the same plan — a replica left for a site that no longer held
///   the shard (a write it took last could be lost); now extras go only to replicas
///   that stay (and `repair_props` tries two extras).
const REGRESSIONS: &[u64] = &[2, 7, 9, 28, 64, 188];

/// Runs seed `seed`: the world as it ended, and the rounds it took to settle once faults
/// stopped, or why it failed.
fn run(seed: u64) -> (World, Result<u64, String>) {
    let mut world = World::new(seed, 3, 7);
    let outcome = play(&mut world);
    (world, outcome)
}

fn play(world: &mut World) -> Result<u64, String> {
    for _ in 0..CHAOS_ROUNDS {
        world.step(true)?;
    }
    world.calm();
    for round in 0..SETTLE_LIMIT {
        world.step(false)?;
        if world.settled().is_ok() {
            // Settled means staying so: no planner finds anything to do.
            for _ in 0..60 {
                world
                    .step(false)
                    .and_then(|()| world.settled())
                    .map_err(|why| format!("settled, then not: {why}"))?;
            }
            return Ok(round);
        }
    }
    let why = world.settled().expect_err("checked above");
    Err(format!("not settled {SETTLE_LIMIT} rounds after faults stopped: {why}"))
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn report(seed: u64, why: &str, world: &World) -> String {
    let tail: Vec<&String> = world.log.iter().rev().take(env("CAIRN_SIM_LOG", 25) as usize).collect();
    let tail: Vec<&str> = tail.into_iter().rev().map(String::as_str).collect();
    format!(
        "seed {seed} failed at round {}: {why}\n  replay: CAIRN_SIM_FIRST_SEED={seed} CAIRN_SIM_SEEDS=1 cargo test -p cairn-node --test simulation\n  last events:\n    {}",
        world.round,
        tail.join("\n    ")
    )
}

#[test]
fn random_schedules_keep_the_invariants_and_settle() {
    let (first, seeds) = (env("CAIRN_SIM_FIRST_SEED", 0), env("CAIRN_SIM_SEEDS", 12));
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut totals: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let mut slowest = 0;
    for seed in first..first + seeds {
        let (world, outcome) = run(seed);
        match outcome {
            Ok(rounds) => {
                slowest = slowest.max(rounds);
                for (what, n) in world.stats {
                    *totals.entry(what).or_default() += n;
                }
            }
            Err(why) => failures.push(report(seed, &why, &world)),
        }
    }
    eprintln!(
        "{seeds} seeds in {:?}: {totals:?}; settled at most {slowest} rounds after faults stopped",
        started.elapsed()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_seed_replays_exactly() {
    let ((a, a_outcome), (b, b_outcome)) = (run(7), run(7));
    assert_eq!((&a.log, &a.stats, a.now, &a_outcome), (&b.log, &b.stats, b.now, &b_outcome));
    assert!(a.log.len() > 5, "the schedule did something");
}

#[test]
fn seeds_that_once_failed() {
    for seed in REGRESSIONS {
        if let (world, Err(why)) = run(*seed) {
            panic!("{}", report(*seed, &why, &world));
        }
    }
}
