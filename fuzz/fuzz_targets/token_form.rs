#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backend::http::fuzzing::token_form(data));
