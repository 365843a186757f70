//! The `planners` fuzz target on stable: every input kept under `fuzz/seeds/planners/`
//! and `fuzz/regressions/planners/`, then thousands of inputs drawn from a fixed seed,
//! each built into a view that every planner must answer with only safe plans.

use std::path::Path;

use cairn_gossip::view::{ViewContext, build_view};
use cairn_node::planner::check::workout;
use cairn_tests::decoders::planner_nodes;

fn run(data: &[u8]) -> Result<(), String> {
    let nodes = planner_nodes(data);
    let me = nodes[0].site_id;
    let view = build_view(me, &nodes, &ViewContext::at(1_000_000));
    let lost = view.sites.iter().filter(|s| !view.is_live(s.site_id)).map(|s| s.site_id).collect();
    workout(&view, me, &lost)
}

#[test]
fn kept_inputs_and_drawn_ones_give_only_safe_plans() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut kept = 0;
    for kind in ["regressions", "seeds"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join("planners")) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() && path.file_name().is_some_and(|n| n != ".keep") {
                let data = std::fs::read(&path).unwrap();
                if let Err(why) = run(&data) {
                    panic!("{}: {why}", path.display());
                }
                kept += 1;
            }
        }
    }
    assert!(kept > 0, "no kept planner inputs under {}", fuzz.display());
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let drawn = 3000;
    for n in 0..drawn {
        let len = (next() % 400) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if let Err(why) = run(&data) {
            panic!("drawn input {n} ({data:?}): {why}");
        }
    }
    eprintln!("{kept} kept and {drawn} drawn planner inputs checked");
}
