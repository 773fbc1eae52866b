#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kappa_core::fuzz::jsonl(data));
