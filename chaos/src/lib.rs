//! Arca's test harness for real processes: start `arca serve` on loopback with a temporary data
//! directory, kill it (`SIGKILL`), stop it (`SIGTERM`), pause and resume it (`SIGSTOP` /
//! `SIGCONT`), read its memory use, and wait for conditions with deadlines instead of sleeps.
//!
//! Fault proxies (UDP and TCP) cut, heal and shape the links between nodes and regions.
//!
//! Helpers named `must_*` panic on failure; they are meant for tests.

pub mod process;
pub mod proxy;
pub mod region;
pub mod wait;

pub use process::{ArcaProcess, ProcessOptions};
pub use proxy::{LinkShape, TcpProxy, UdpProxy};
pub use region::{must_issue, Region, RegionOptions, RegionReplication};
pub use wait::wait_until;
