//! What the package-index benchmarks (`pypi-bench`, `npm-bench`, `cargo-bench`) share: GETs of one URL at a
//! concurrency with latency percentiles, the median of timed publishes, and the table that
//! sets Arca beside the peer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

/// One GET case: requests/s, p50 and p99 in ms, and bytes per response.
#[derive(Debug, Clone, Copy)]
pub struct Gets {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub bytes: u64,
}

/// A case measured on Arca (first) and the peer (second).
pub struct Case {
    pub name: String,
    pub measured: Vec<Gets>,
}

/// Where `scripts/setup.sh` installs the peers (`ARCA_TOOLS_DIR`, `~/.cache/arca-tools`).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("ARCA_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/arca-tools")
        })
}

/// `requests` GETs of `url` with `accept` from `concurrency` clients; every answer must be 2xx.
pub async fn measure(
    http: &reqwest::Client,
    url: &str,
    accept: &'static str,
    concurrency: usize,
    requests: u64,
) -> anyhow::Result<Gets> {
    let headers = [("accept", accept.to_string())];
    measure_with(http, url, &headers, concurrency, requests).await
}

/// `requests` GETs of `url` with `headers` from `concurrency` clients; every answer must be
/// 2xx or `304` (a conditional GET's).
pub async fn measure_with(
    http: &reqwest::Client,
    url: &str,
    headers: &[(&'static str, String)],
    concurrency: usize,
    requests: u64,
) -> anyhow::Result<Gets> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, url, next) = (http.clone(), url.to_string(), next.clone());
        let headers = headers.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut histogram = hdrhistogram::Histogram::<u64>::new(3)?;
            let mut bytes = 0u64;
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let begun = Instant::now();
                let mut request = http.get(&url);
                for (name, value) in &headers {
                    request = request.header(*name, value);
                }
                let response = request.send().await?;
                anyhow::ensure!(
                    response.status().is_success() || response.status() == 304,
                    "GET {url}: {}",
                    response.status()
                );
                bytes += response.bytes().await?.len() as u64;
                histogram.record(begun.elapsed().as_micros() as u64)?;
            }
            Ok::<_, anyhow::Error>((histogram, bytes))
        }));
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut bytes = 0;
    for task in tasks {
        let (histogram, got) = task.await??;
        all.add(histogram)?;
        bytes += got;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Gets {
        per_second: requests as f64 / seconds,
        p50_ms: all.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: all.value_at_quantile(0.99) as f64 / 1000.0,
        bytes: bytes / requests.max(1),
    })
}

/// The median of `times`, in ms (0 when empty).
pub fn median_ms(times: &mut [Duration]) -> f64 {
    times.sort();
    times
        .get(times.len() / 2)
        .map_or(0.0, |t| t.as_secs_f64() * 1000.0)
}

/// The GET cases and the 10 MiB publish medians (Arca's, the peer's) side by side.
pub fn results_table(peer: &str, cases: &[Case], publish_ms: Vec<f64>) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table.set_header([
        "case".to_string(),
        "arca req/s".into(),
        format!("{peer} req/s"),
        "ratio".into(),
        "arca p50/p99 ms".into(),
        format!("{peer} p50/p99 ms"),
        format!("bytes (arca / {peer})"),
    ]);
    for case in cases {
        let [arca, other] = [&case.measured[0], &case.measured[1]];
        table.add_row([
            case.name.clone(),
            format!("{:.0}", arca.per_second),
            format!("{:.0}", other.per_second),
            format!("{:.2}", arca.per_second / other.per_second),
            format!("{:.1} / {:.1}", arca.p50_ms, arca.p99_ms),
            format!("{:.1} / {:.1}", other.p50_ms, other.p99_ms),
            format!("{} / {}", arca.bytes, other.bytes),
        ]);
    }
    if let [arca, other] = publish_ms[..] {
        table.add_row([
            "publish 10 MiB (median ms)".to_string(),
            format!("{arca:.0}"),
            format!("{other:.0}"),
            format!("{:.2} (time)", arca / other),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    table
}

/// Starts nginx (2 workers, access log off, sendfile, `gzip_static`: a `.gz` beside a file is
/// sent to clients that take gzip) on a free loopback port serving the
/// static files under `root`, its own files under `dir`: the static-file peer of the index
/// benchmarks.
pub fn start_nginx(
    binary: &Path,
    dir: &Path,
    root: &Path,
) -> anyhow::Result<(std::process::Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let user = std::process::Command::new("id").arg("-un").output()?;
    let user = String::from_utf8_lossy(&user.stdout).trim().to_string();
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let config = prefix.join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            "user {user};\nworker_processes 2;\npid {pid};\nerror_log {log} error;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; keepalive_requests 100000;\n\
             client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;\n\
             uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {root}; default_type text/plain; gzip_static on; }} }}\n",
            pid = prefix.join("nginx.pid").display(),
            log = prefix.join("logs/error.log").display(),
            tmp = prefix.display(),
            root = root.display(),
        ),
    )?;
    let child = std::process::Command::new(binary)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&config)
        .args(["-g", "daemon off;"])
        .spawn()
        .with_context(|| {
            format!(
                "start {} (scripts/setup.sh installs nginx-light)",
                binary.display()
            )
        })?;
    Ok((child, format!("http://127.0.0.1:{port}")))
}

/// Stops nginx with SIGTERM (its master stops the workers; SIGKILL would orphan them).
pub fn stop_nginx(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}
