//! The `webhooks` fuzz target: libFuzzer's input through `gatehouse_fuzz::webhooks::run`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::webhooks::run(data));
