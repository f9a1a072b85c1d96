//! The `saison_mac` fuzz target: libFuzzer's input through `gatehouse_fuzz::saison_mac::run`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| gatehouse_fuzz::saison_mac::run(data));
