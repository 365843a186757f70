#![no_main]
//! Fuzz target: see `cairn_tests::decoders::stored_records`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_tests::decoders::stored_records(data));
