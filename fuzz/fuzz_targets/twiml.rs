#![no_main]

// The target's body lives in crossline::fuzzing, so the library's unit tests
// (`cargo test --lib fuzzing::replay`) can replay what it finds.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    crossline::fuzzing::twiml(data);
});
