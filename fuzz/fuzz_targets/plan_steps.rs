#![no_main]
//! Fuzz target: see `cairn_tests::decoders::plan_steps`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_tests::decoders::plan_steps(data));
