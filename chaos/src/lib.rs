//! Arca's test harness for real processes: start `arca serve` on loopback with a temporary data
//! directory, kill it (`SIGKILL`), stop it (`SIGTERM`), pause and resume it (`SIGSTOP` /
//! `SIGCONT`), read its memory use, and wait for conditions with deadlines instead of sleeps.
//!
//! Fault proxies (UDP and TCP) cut, heal and shape the links between nodes and regions.
//!
//! Helpers named `must_*` panic on failure; they are meant for tests.
//!
//! The `arca-chaos` binary builds on them: a cluster of regions ([`cluster`]), a seeded fault
//! plan per named scenario ([`scenario`], [`faults`]), a workload whose every operation is
//! recorded ([`workload`], [`history`], [`content`]), and a checker of the design's invariants
//! over that history and the healed cluster ([`observe`], [`checker`]), reported by [`run`]
//! with a [`timeline`].

pub mod cargo;
pub mod checker;
pub mod cluster;
pub mod content;
pub mod credentials;
pub mod faults;
pub mod helm;
pub mod history;
pub mod maven;
pub mod npm;
pub mod nuget;
pub mod observe;
pub mod oci;
pub mod packages;
pub mod process;
pub mod proxy;
pub mod pypi;
pub mod region;
pub mod run;
pub mod scenario;
pub mod timeline;
pub mod wait;
pub mod workload;

pub use process::{time_wait_to, ArcaProcess, ProcessOptions};
pub use proxy::{Direction, LinkShape, TcpProxy, UdpProxy};
pub use region::{must_issue, Region, RegionOptions, RegionReplication};
pub use wait::wait_until;
