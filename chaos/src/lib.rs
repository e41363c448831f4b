//! Arca's test harness for real processes: start `arca serve` on loopback with a temporary data
//! directory, kill it (`SIGKILL`), stop it (`SIGTERM`), pause and resume it (`SIGSTOP` /
//! `SIGCONT`), read its memory use, and wait for conditions with deadlines instead of sleeps.
//!
//! Helpers named `must_*` panic on failure; they are meant for tests.

pub mod process;
pub mod region;
pub mod wait;

pub use process::{ArcaProcess, ProcessOptions};
pub use region::{Region, RegionOptions};
pub use wait::wait_until;
