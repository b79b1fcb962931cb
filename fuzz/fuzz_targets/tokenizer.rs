#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kroute_fuzz::tokenizer(data));
