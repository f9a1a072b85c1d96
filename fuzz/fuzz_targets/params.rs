//! The `params` fuzz target: libFuzzer's input through `gatehouse_fuzz::params::run`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::params::run(data));
