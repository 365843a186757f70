#![no_main]
//! Fuzz target: every planner on a view drawn from the input (`cairn_tests::decoders::
//! planner_nodes`) returns only safe plans (`cairn_node::planner::check::workout`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let nodes = cairn_tests::decoders::planner_nodes(data);
    let me = nodes[0].site_id;
    let view = cairn_gossip::view::build_view(me, &nodes, &cairn_gossip::view::ViewContext::at(1_000_000));
    let lost = view.sites.iter().filter(|s| !view.is_live(s.site_id)).map(|s| s.site_id).collect();
    if let Err(why) = cairn_node::planner::check::workout(&view, me, &lost) {
        panic!("{why}");
    }
});
