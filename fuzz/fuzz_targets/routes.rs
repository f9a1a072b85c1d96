//! The `routes` fuzz target: libFuzzer's input through `gatehouse_fuzz::routes::run`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::routes::run(data));
