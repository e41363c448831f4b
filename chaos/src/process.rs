//! One `arca serve` process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How to start a node process.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// The `arca` binary.
    pub binary: PathBuf,
    /// The node's data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// HTTP address; `127.0.0.1:0` picks a free port on the first start. Restarts reuse the
    /// port the first start got, so clients keep their URL.
    pub http_addr: String,
    /// gRPC address, same rules as `http_addr`.
    pub grpc_addr: String,
    /// Replication (UDP) address, same rules; `None`: no replication endpoint.
    pub replication_addr: Option<String>,
    /// More `arca serve` arguments.
    pub extra_args: Vec<String>,
    /// Environment variables for the process.
    pub env: Vec<(String, String)>,
}

impl ProcessOptions {
    pub fn new(binary: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            data_dir: data_dir.into(),
            http_addr: "127.0.0.1:0".into(),
            grpc_addr: "127.0.0.1:0".into(),
            replication_addr: None,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A running (or stopped) `arca serve` process.
pub struct ArcaProcess {
    options: ProcessOptions,
    child: Option<Child>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub replication_addr: Option<SocketAddr>,
    log_path: PathBuf,
}

impl ArcaProcess {
    /// Starts the process and waits until it prints its listening line.
    pub fn start(options: ProcessOptions) -> anyhow::Result<Self> {
        let log_path = options.data_dir.with_extension("log");
        let (child, addrs) = spawn(&options, &log_path)?;
        let mut options = options;
        options.http_addr = addrs.http.to_string();
        options.grpc_addr = addrs.grpc.to_string();
        if let Some(replication) = addrs.replication {
            options.replication_addr = Some(replication.to_string());
        }
        Ok(Self {
            options,
            child: Some(child),
            http_addr: addrs.http,
            grpc_addr: addrs.grpc,
            replication_addr: addrs.replication,
            log_path,
        })
    }

    pub fn must_start(options: ProcessOptions) -> Self {
        Self::start(options).unwrap_or_else(|e| panic!("start arca: {e:#}"))
    }

    /// The options the next restart uses (ports are those of the first start).
    pub fn options_mut(&mut self) -> &mut ProcessOptions {
        &mut self.options
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// A session token for the bootstrap account (this node must have created it).
    pub async fn admin_token(&self) -> anyhow::Result<String> {
        crate::credentials::admin_login(&self.base_url(), &self.options.data_dir).await
    }

    /// [`ArcaProcess::admin_token`] for code outside an async runtime.
    pub fn admin_token_blocking(&self) -> String {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(self.admin_token())
            .expect("sign in as admin")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self) -> &Path {
        &self.options.data_dir
    }

    /// The process's stderr so far (its log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("process is not running"))?;
        kill(Pid::from_raw(pid as i32), signal).with_context(|| format!("send {signal} to {pid}"))
    }

    /// `kill -9`: no shutdown code runs.
    pub fn must_kill(&mut self) {
        self.signal(Signal::SIGKILL).expect("SIGKILL");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Graceful stop (`SIGTERM`), waiting up to `timeout` before falling back to `SIGKILL`.
    pub fn must_stop(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn must_pause(&self) {
        self.signal(Signal::SIGSTOP).expect("SIGSTOP");
    }

    pub fn must_resume(&self) {
        self.signal(Signal::SIGCONT).expect("SIGCONT");
    }

    /// Starts the process again on the same data directory and the same ports.
    pub fn must_restart(&mut self) {
        if self.child.is_some() {
            self.must_kill();
        }
        let (child, addrs) =
            spawn(&self.options, &self.log_path).unwrap_or_else(|e| panic!("restart arca: {e:#}"));
        self.child = Some(child);
        self.http_addr = addrs.http;
        self.grpc_addr = addrs.grpc;
        self.replication_addr = addrs.replication;
    }

    /// Resident set size now, and its high-water mark, in bytes (from `/proc`).
    pub fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("process is not running"))?;
        memory_of(pid)
    }
}

/// A process's resident set size now, and its high-water mark, in bytes (from `/proc`).
pub fn memory_of(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow!("malformed {name}"))?
            .parse()?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// TCP connections in TIME_WAIT to any of `ports` on loopback (IPv4), from `/proc/net/tcp`:
/// what a client that opens a connection per call leaves behind.
pub fn time_wait_to(ports: &[u16]) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields
                .get(2)
                .and_then(|remote| remote.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            fields.get(3) == Some(&"06") && remote_port.is_some_and(|p| ports.contains(&p))
        })
        .count()
}

impl Drop for ArcaProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The addresses a started process reported.
struct Bound {
    http: SocketAddr,
    grpc: SocketAddr,
    replication: Option<SocketAddr>,
}

fn spawn(options: &ProcessOptions, log_path: &Path) -> anyhow::Result<(Child, Bound)> {
    if let Some(parent) = log_path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let mut command = Command::new(&options.binary);
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(&options.data_dir)
        .arg("--http")
        .arg(&options.http_addr)
        .arg("--grpc")
        .arg(&options.grpc_addr)
        .args(
            options
                .replication_addr
                .iter()
                .flat_map(|addr| ["--replication".to_string(), addr.clone()]),
        )
        .args(&options.extra_args)
        .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = command
        .spawn()
        .with_context(|| format!("spawn {}", options.binary.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && line.starts_with("arca listening ") {
                let _ = tx.send(line);
                sent = true;
            }
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            bail!("arca did not report listening within 60s; log:\n{log}");
        }
    };
    let addr = |key: &str| -> anyhow::Result<SocketAddr> {
        let value = line
            .split_whitespace()
            .find_map(|part| part.strip_prefix(key))
            .ok_or_else(|| anyhow!("no {key} in {line:?}"))?;
        value.parse().with_context(|| format!("parse {value}"))
    };
    let replication = match line.contains("replication=") {
        true => Some(addr("replication=")?),
        false => None,
    };
    Ok((
        child,
        Bound {
            http: addr("http=")?,
            grpc: addr("grpc=")?,
            replication,
        },
    ))
}
