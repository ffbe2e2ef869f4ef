#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| backend::http::fuzzing::authorize_query(data));
