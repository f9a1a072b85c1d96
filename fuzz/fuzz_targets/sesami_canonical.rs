//! The `sesami_canonical` fuzz target: libFuzzer's input through `gatehouse_fuzz::sesami_canonical::run`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::sesami_canonical::run(data));
