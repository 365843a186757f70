#![no_main]
//! Fuzz target: see `cairn_tests::decoders::gossip_values`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_tests::decoders::gossip_values(data));
