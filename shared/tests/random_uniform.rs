//! `random_string` draws uniformly even when the alphabet's size does not divide 256: the
//! rejection bound is what keeps it so, and a wrong bound (found by `fuzz/mutants`: `256 +` or
//! `256 /` in place of `256 -` and `256 %`, or `<=` in place of `<` against it) still draws
//! only from the alphabet, so only the frequencies show it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed setup or assumption should stop the test loudly; each panic is documented"
)]

use gatehouse::crypto::random_string;

/// An alphabet of 200 bytes, the first 56 of them `a` and the rest `b`. 256 = 200 + 56, so a
/// draw without rejection (`byte % 200` over all 256 bytes) gives `a` 112 / 256 = 43.75% of the
/// time; a uniform one 56 / 200 = 28%.
#[test]
fn a_draw_is_uniform_over_an_alphabet_that_does_not_divide_256() {
    let mut alphabet = vec![b'a'; 56];
    alphabet.extend(std::iter::repeat_n(b'b', 144));
    let draws = 20_000;
    let s = random_string(&alphabet, draws).expect("random");
    assert_eq!(s.len(), draws);
    let a = s.bytes().filter(|&b| b == b'a').count();
    // Binomial(20000, 0.28): mean 5600, standard deviation 63; the bounds are 10 deviations out
    // and still far from the 8750 of a biased draw.
    assert!((4970..=6230).contains(&a), "`a` drawn {a} times of {draws}");
}

/// An alphabet of 255 bytes, one `a` and 254 `b`: the bound is 255, and a draw that also took
/// the byte 255 (`255 % 255` = 0) would give `a` twice its share, 2 / 256 instead of 1 / 255.
#[test]
fn the_byte_at_the_rejection_bound_is_rejected() {
    let mut alphabet = vec![b'a'];
    alphabet.extend(std::iter::repeat_n(b'b', 254));
    let draws = 200_000;
    let s = random_string(&alphabet, draws).expect("random");
    let a = s.bytes().filter(|&b| b == b'a').count();
    // Uniform: mean 784, standard deviation 28; with the byte 255 taken: mean 1562.
    assert!((500..=1100).contains(&a), "`a` drawn {a} times of {draws}");
}

/// A one-character string is drawn too (a draw of `len * 2` bytes per round, never none).
#[test]
fn a_single_character_is_drawn() {
    let s = random_string(b"xy", 1).expect("random");
    assert!(s == "x" || s == "y", "{s}");
}
