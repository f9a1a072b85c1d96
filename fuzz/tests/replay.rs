//! Every fuzz target over its seeds (`fuzz/seeds/<target>/`, including any input a fuzzing run
//! found a bug with) and over pseudo-random inputs from a fixed seed, so that a target's
//! properties hold on each test run, not only when someone runs `fuzz/run`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]

use std::path::Path;

/// Pseudo-random inputs per target: a smoke test, not a fuzzing run.
const RANDOM_INPUTS: usize = 300;

/// xorshift64*: reproducible bytes without a dependency.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

fn replay(name: &str) {
    let target = gatehouse_fuzz::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap();
    let seeds = seeds(name);
    assert!(!seeds.is_empty(), "fuzz/seeds/{name}/ has no seeds");
    for (file, bytes) in &seeds {
        eprintln!("{name}: seed {file}");
        target(bytes);
    }
    let mut rng = Bytes(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    for i in 0..RANDOM_INPUTS {
        // Random bytes, and seeds with a few bytes changed.
        let input = if i % 2 == 0 || seeds.is_empty() {
            let len = (rng.next() % 512) as usize;
            rng.fill(len)
        } else {
            let mut bytes = seeds[i % seeds.len()].1.clone();
            for _ in 0..1 + rng.next() % 4 {
                if !bytes.is_empty() {
                    let at = (rng.next() as usize) % bytes.len();
                    bytes[at] = rng.next() as u8;
                }
            }
            bytes
        };
        target(&input);
    }
}

#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = gatehouse_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    files.sort();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(files, sorted, "fuzz_targets/ and TARGETS disagree");
}

macro_rules! replay_tests {
    ($($name:ident),*) => { $( #[test] fn $name() { replay(stringify!($name)); } )* };
}

replay_tests!(
    params,
    cookies,
    sesami_canonical,
    saison_mac,
    id_token,
    lambda_event,
    webhooks,
    routes
);
