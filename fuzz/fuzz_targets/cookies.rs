//! The `cookies` fuzz target: libFuzzer's input through `gatehouse_fuzz::cookies::run`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::cookies::run(data));
