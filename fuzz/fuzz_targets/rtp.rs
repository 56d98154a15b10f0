#![no_main]

// The target's body lives in crossline::fuzzing, so tests/fuzz_regressions.rs
// can replay what it finds.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    crossline::fuzzing::rtp(data);
});
