//! Fuzz target: YAML text through `Config::parse`, against the example policies.
//!
//! Properties: no panic, and a refusal always names at least one error.

use verdict_fuzz::{config_yaml, parse_config, seeds_directory, write_seeds};

fn main() {
    if let Some(directory) = seeds_directory() {
        write_seeds(
            &directory,
            &[
                include_bytes!("../../../examples/verdict.yaml").to_vec(),
                config_yaml("http://127.0.0.1:1/jwks.json").into_bytes(),
                b"issuers: [{name: a, issuer: ${X}, audiences: []}]\nlisten: [1, {a: *b}]\n"
                    .to_vec(),
            ],
        );
        return;
    }
    afl::fuzz(true, |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Err(errors) = parse_config(text) {
            assert!(!errors.0.is_empty(), "a refusal without an error");
        }
    });
}
