//! The `lambda_event` fuzz target: libFuzzer's input through `gatehouse_fuzz::lambda_event::run`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::lambda_event::run(data));
