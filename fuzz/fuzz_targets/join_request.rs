#![no_main]
// The logic lives in warren::fuzzing so tests/fuzz_corpus.rs replays the corpus through it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::join_request(data));
