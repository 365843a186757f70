//! Replays every input kept under `fuzz/regressions/<target>/` (crashes the fuzzers once
//! found, now fixed) and `fuzz/seeds/<target>/` through the decoders, on stable Rust.
//! See `fuzz/README.md`.

use std::path::Path;

use cairn_tests::decoders::TARGETS;

#[test]
fn every_kept_fuzz_input_decodes_without_panicking() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for (name, target) in TARGETS {
        for kind in ["regressions", "seeds"] {
            let dir = fuzz.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_file() && path.file_name().is_some_and(|n| n != ".keep") {
                    target(&std::fs::read(&path).unwrap());
                    replayed += 1;
                }
            }
        }
    }
    assert!(replayed > 0, "no kept fuzz inputs found under {}", fuzz.display());
    eprintln!("{replayed} kept fuzz inputs replayed");
}
