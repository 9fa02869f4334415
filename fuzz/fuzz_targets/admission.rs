//! libFuzzer target: one AdmissionReview body through the webhook handler and the injector,
//! with the properties of [`mcptrust_fuzz::Harness::check`]. Half of the mutations are
//! structure-aware ([`mcptrust_fuzz::mutate_json`]), the rest are libFuzzer's byte-level ones.
//!
//! bash bench/fuzz.sh   (cargo +nightly fuzz run admission corpus/admission seeds ../tests/fixtures/admission)
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};
use mcptrust_fuzz::{Harness, mutate_json};

static HARNESS: LazyLock<Harness> = LazyLock::new(Harness::new);

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = HARNESS.check_one_mutator(data) {
        panic!("property violated: {violation}");
    }
});

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    if seed % 2 == 0
        && let Some(out) = mutate_json(&data[..size], u64::from(seed), max_size)
    {
        data[..out.len()].copy_from_slice(&out);
        return out.len();
    }
    fuzzer_mutate(data, size, max_size)
});
