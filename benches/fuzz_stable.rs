//! The fuzzing harness on stable, without libFuzzer: a seeded, structure-aware random
//! generator (`mutate_json` of `fuzz/src/lib.rs`, stacked on a pool of earlier mutants)
//! over the seeds (`fuzz/seeds/`) and the fixtures (`tests/fixtures/admission/`), each
//! input checked with the same properties as the `cargo fuzz` target
//! (`Harness::check_one_mutator`). Uninstrumented, so several times faster per execution
//! than the libFuzzer build; not coverage-guided, so it complements it.
//!
//! Run: `FUZZ_RUNS=10000000 FUZZ_SEED=1 cargo bench --bench fuzz_stable`. Inputs that
//! break a property are written to `target/fuzz-findings/` (replay them by copying them
//! into `tests/fixtures/admission/regressions/`). Prints the execution count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The binary's allocator: the harness allocates as much as the webhook (more: it parses
/// each body whole, twice), and glibc's malloc took half of its time.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Instant;

use harness::{Harness, Rng, mutate_json};

fn corpus() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [
        "fuzz/seeds",
        "tests/fixtures/admission",
        "tests/fixtures/admission/regressions",
    ] {
        let files = harness::files_in(&root.join(dir));
        out.extend(files.iter().map(|p| std::fs::read(p).unwrap()));
    }
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let runs = env("FUZZ_RUNS", 1_000_000);
    // `FUZZ_DUMP=FILE`: instead of checking, write every mutator's answer to every input
    // (length-prefixed) to FILE, to compare two builds' wire bytes with `cmp`.
    let mut dump = std::env::var_os("FUZZ_DUMP")
        .map(|p| std::io::BufWriter::new(std::fs::File::create(p).expect("FUZZ_DUMP file")));
    let seed = env("FUZZ_SEED", 1);
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
    let seeds = corpus();
    let harness = Harness::new();
    let mut rng = Rng::new(seed);
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut failures = 0u64;
    let start = Instant::now();
    // Quiet the panic hook's output for caught panics; failures are reported below.
    std::panic::set_hook(Box::new(|_| {}));
    println!(
        "fuzz_stable: {runs} executions, seed {seed}, {} seed inputs",
        seeds.len()
    );
    if let Some(out) = dump.as_mut() {
        use std::io::Write as _;
        for answer in seeds.iter().flat_map(|s| harness.answers(s)) {
            out.write_all(&(answer.len() as u64).to_le_bytes()).unwrap();
            out.write_all(&answer).unwrap();
        }
    }
    for i in 0..runs {
        let base: &[u8] = if !pool.is_empty() && rng.one_in(2) {
            &pool[rng.below(pool.len())]
        } else {
            &seeds[rng.below(seeds.len())]
        };
        let mut input = mutate_json(base, rng.next_u64(), 1 << 16).unwrap_or_else(|| base.to_vec());
        if rng.one_in(16) && !input.is_empty() {
            // A byte-level change, for the parser's error paths.
            let at = rng.below(input.len());
            match rng.below(3) {
                0 => input[at] ^= 1 << rng.below(8),
                1 => input.truncate(at),
                _ => input.insert(at, b"{}[]\",:\\"[rng.below(8)]),
            }
        }
        if let Some(out) = dump.as_mut() {
            use std::io::Write as _;
            for answer in harness.answers(&input) {
                out.write_all(&(answer.len() as u64).to_le_bytes()).unwrap();
                out.write_all(&answer).unwrap();
            }
            if rng.one_in(32) {
                pool.push(input);
            }
            continue;
        }
        let verdict = catch_unwind(AssertUnwindSafe(|| harness.check_one_mutator(&input)));
        let problem = match verdict {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("panicked".to_owned()),
        };
        if let Some(problem) = problem {
            failures += 1;
            std::fs::create_dir_all(&out).unwrap();
            let path = out.join(format!("finding-{seed}-{i}.json"));
            std::fs::write(&path, &input).unwrap();
            println!(
                "finding {failures} at execution {i}: {problem} ({})",
                path.display()
            );
        } else if rng.one_in(32) {
            if pool.len() < 2048 {
                pool.push(input);
            } else {
                let slot = rng.below(pool.len());
                pool[slot] = input;
            }
        }
        if (i + 1) % 1_000_000 == 0 {
            println!(
                "{} executions, {failures} findings, {:.0} s, {:.0} exec/s",
                i + 1,
                start.elapsed().as_secs_f64(),
                (i + 1) as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "RESULT fuzz_stable: {runs} executions in {secs:.0} s ({:.0} exec/s), {failures} findings",
        runs as f64 / secs
    );
}
