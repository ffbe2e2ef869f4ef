#![no_main]
libfuzzer_sys::fuzz_target!(|data: &str| backend::http::fuzzing::basic_header(data));
