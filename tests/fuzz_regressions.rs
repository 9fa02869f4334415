//! Replays the fuzzing harness (`fuzz/src/lib.rs`, shared with the `cargo fuzz` target) on
//! stable: every realistic fixture of `tests/fixtures/admission/`, every input the fuzzer
//! ever found a problem with (`tests/fixtures/admission/regressions/`), and sixty
//! seeded structure-aware mutations of the fixtures. The properties are those of
//! `Harness::check`: a valid AdmissionReview answer for any body, a patch that applies, a
//! patched object that still deserializes as its kind without new duplicates, and an empty
//! second pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

use harness::{Harness, files_in as files, mutate_json};
use mcptrust::inject::{InjectConfig, StaticMutator};
use mcptrust::webhook::admission::{ReviewOutcome, review};

fn fixtures() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let out: Vec<_> = files(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let body = std::fs::read(&p).unwrap();
            (p, body)
        })
        .collect();
    assert!(out.len() >= 5, "fixtures missing in {}", dir.display());
    out
}

#[test]
fn fixtures_are_patched_and_hold_every_property() {
    let harness = Harness::new();
    let mutator = StaticMutator::new(&InjectConfig::embedded_default(), None);
    for (path, body) in fixtures() {
        assert!(
            (2_000..=21_000).contains(&body.len()),
            "{} is {} bytes",
            path.display(),
            body.len()
        );
        let (_, outcome) = review(&body, &mutator);
        assert_eq!(outcome, ReviewOutcome::Patched, "{}", path.display());
        if let Err(e) = harness.check(&body) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn fuzzer_findings_stay_fixed() {
    let harness = Harness::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission/regressions");
    for path in files(&dir) {
        let body = std::fs::read(&path).unwrap();
        if let Err(e) = harness.check(&body) {
            panic!("{}: {e}", path.display());
        }
    }
}

#[test]
fn seeded_structural_mutations_hold_every_property() {
    let harness = Harness::new();
    let fixtures = fixtures();
    for seed in 0..60u64 {
        let (path, body) = &fixtures[seed as usize % fixtures.len()];
        let Some(mutated) = mutate_json(body, seed, 1 << 20) else {
            continue;
        };
        if let Err(e) = harness.check(&mutated) {
            panic!(
                "seed {seed} on {}: {e}\ninput: {}",
                path.display(),
                String::from_utf8_lossy(&mutated)
            );
        }
    }
}

/// The structure-aware mutator itself never panics (a `String::truncate` inside a UTF-8
/// character once did, killing fuzzing jobs).
#[test]
fn the_mutator_never_panics() {
    let fixtures = fixtures();
    for seed in 0..200u64 {
        let (_, body) = &fixtures[seed as usize % fixtures.len()];
        let once = mutate_json(body, seed, 1 << 20).unwrap_or_default();
        let _ = mutate_json(&once, seed ^ 0x5555, 1 << 20);
    }
}

#[test]
fn garbage_bodies_hold_every_property() {
    let harness = Harness::new();
    for body in [
        &b""[..],
        b"{",
        b"null",
        b"[]",
        b"\"\\ud800\"",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{}}",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":7}}",
        &[0xff, 0xfe, 0x00],
    ] {
        harness.check(body).unwrap();
    }
}
