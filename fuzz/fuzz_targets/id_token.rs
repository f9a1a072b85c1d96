//! The `id_token` fuzz target: libFuzzer's input through `gatehouse_fuzz::id_token::run`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::id_token::run(data));
