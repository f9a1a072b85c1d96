//! Platform simulators: each platform's documented endpoints over real HTTP, with real keys and
//! signatures, mounted in the local server under `/_sim/<platform>/`.

pub mod haravan;
pub mod momo;
pub mod saison;
pub mod sesami;
pub mod weblink;
