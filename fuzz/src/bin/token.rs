//! Fuzz target: a bearer token through `Verifier::verify` against a fixed issuer and key set.
//!
//! The first input byte picks what to verify: one of the fixture's valid RS256, ES256 or HS256 tokens
//! edited by the rest of the input (four bytes an edit: operation, position high and low byte, value),
//! or the rest of the input itself as the token. Properties: no panic, and no token verifies unless it
//! is byte for byte one the fixture minted.

use std::panic::AssertUnwindSafe;

use verdict_fuzz::{Fixture, seeds_directory, write_seeds};

fn main() {
    let fixture = Fixture::new();
    if let Some(directory) = seeds_directory() {
        let hmac = fixture.valid_tokens.get(2).cloned().unwrap_or_default();
        let raw = |text: &str| [&[3u8][..], text.as_bytes()].concat();
        write_seeds(
            &directory,
            &[
                vec![0],
                vec![1],
                vec![2],
                vec![0, 3, 0, 10, b'A'],
                vec![1, 1, 0, 40, b'.'],
                vec![2, 2, 0, 200, 0],
                raw(&hmac),
                raw("eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0."),
                raw("a.b.c.d.e"),
            ],
        );
        return;
    }
    let fixture = AssertUnwindSafe(fixture);
    let mut runtime = AssertUnwindSafe(None);
    afl::fuzz(true, move |data: &[u8]| {
        let token = token_of(&fixture, data);
        let runtime = runtime.get_or_insert_with(verdict_fuzz::runtime);
        let verifier = fixture.state.current().engine.verifier().clone();
        if let Ok(verified) = runtime.block_on(verifier.verify(&token)) {
            assert!(
                fixture.is_valid_token(&token),
                "a token the fixture never minted verified (subject `{}`): {token}",
                verified.credential.subject
            );
        }
    });
}

/// The token an input stands for.
fn token_of(fixture: &Fixture, data: &[u8]) -> String {
    let Some((&mode, rest)) = data.split_first() else {
        return String::new();
    };
    let Some(base) = fixture.valid_tokens.get(usize::from(mode % 4)) else {
        return String::from_utf8_lossy(rest).into_owned();
    };
    let mut bytes = base.clone().into_bytes();
    for edit in rest.chunks_exact(4) {
        let &[operation, high, low, value] = edit else {
            continue;
        };
        let position = usize::from(u16::from_be_bytes([high, low]));
        let position = position % (bytes.len() + 1);
        match operation % 4 {
            0 => {
                if let Some(byte) = bytes.get_mut(position) {
                    *byte ^= value;
                }
            }
            1 => bytes.insert(position, value),
            2 => {
                if position < bytes.len() {
                    bytes.remove(position);
                }
            }
            _ => {
                if let Some(byte) = bytes.get_mut(position) {
                    *byte = value;
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
