//! What every stage shares: the names of the run's objects and phases ([`names`]), what each check
//! is ([`catalog`]), the console ([`progress`]), statistics on counted outcomes ([`stats`]) and small
//! utilities ([`util`]).
//!
//! May import: nothing of meshcheck outside this folder (the leaves of the import graph).

pub mod catalog;
pub mod names;
pub mod progress;
pub mod stats;
pub mod util;
