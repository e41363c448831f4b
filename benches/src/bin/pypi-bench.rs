//! Arca's PyPI index against pypiserver, side by side in one run on this machine: the simple
//! page of a project with `--versions` versions (PEP 691 JSON from Arca, pypiserver's HTML)
//! and a file download, each at `--concurrency` clients; and the publish of a 10 MiB wheel
//! (twine's multipart upload) to both.
//!
//! ```sh
//! cargo run --release -p arca-benches --bin pypi-bench -- --versions 1000 --concurrency 64
//! ```
//!
//! pypiserver (2.4, on waitress: its default wsgiref server takes one connection at a time)
//! comes from the virtualenv `scripts/setup.sh` creates (`--pypiserver` overrides).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use arca_benches::compare::{scratch, wait_ready, Server};
use arca_benches::load;
use arca_benches::packages::{measure, median_ms, results_table, tools_dir, Case};
use clap::Parser;

#[derive(Parser)]
#[command(name = "pypi-bench", about = "Arca's PyPI index against pypiserver")]
struct Args {
    /// The `arca` binary.
    #[arg(long, default_value = "target/release/arca")]
    arca: PathBuf,
    /// The `pypi-server` executable.
    #[arg(long)]
    pypiserver: Option<PathBuf>,
    /// Versions of the benchmarked project.
    #[arg(long, default_value_t = 1000)]
    versions: u64,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per measured case.
    #[arg(long, default_value_t = 3000)]
    requests: u64,
    /// 10 MiB publishes per server.
    #[arg(long, default_value_t = 5)]
    publishes: u64,
    /// Scratch directory (a temporary one by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

use arca_chaos::pypi::{multipart_upload, UPLOAD_BOUNDARY as BOUNDARY};

fn wheel(project: &str, version: &str, payload: &[u8]) -> anyhow::Result<(String, Vec<u8>)> {
    let dist = project.replace('-', "_");
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file(format!("{dist}/data.bin"), stored)?;
    zip.write_all(payload)?;
    zip.start_file(format!("{dist}-{version}.dist-info/METADATA"), stored)?;
    zip.write_all(
        format!("Metadata-Version: 2.1\nName: {project}\nVersion: {version}\nRequires-Python: >=3.8\n\n")
            .as_bytes(),
    )?;
    Ok((
        format!("{dist}-{version}-py3-none-any.whl"),
        zip.finish()?.into_inner(),
    ))
}

struct Peer {
    name: &'static str,
    /// Where uploads go.
    upload: String,
    /// The project's simple page.
    page: String,
    /// One file's URL.
    file: String,
    http: reqwest::Client,
}

async fn upload(peer: &Peer, project: &str, version: &str, payload: &[u8]) -> anyhow::Result<()> {
    let (filename, data) = wheel(project, version, payload)?;
    let response = peer
        .http
        .post(&peer.upload)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(multipart_upload(project, version, &filename, &data))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{} upload of {filename}: {} {}",
        peer.name,
        response.status(),
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (dir, _guard) = scratch(args.dir.clone())?;
    let arca = Server::arca(&args.arca, &dir).await?;
    let arca_http = load::client_with_token(args.concurrency, arca.token.as_deref());
    load::create_arca_repo(&arca_http, &arca.url, "py", "pypi").await?;

    let pypiserver = args
        .pypiserver
        .clone()
        .unwrap_or_else(|| tools_dir().join("py/bin/pypi-server"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let packages = dir.join("pypiserver-packages");
    std::fs::create_dir_all(&packages)?;
    let mut child = std::process::Command::new(&pypiserver)
        .args([
            "run",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-a",
            ".",
            "-P",
            ".",
            "--log-stream",
            "none",
        ])
        .arg(&packages)
        .spawn()
        .with_context(|| {
            format!(
                "start {} (scripts/setup.sh installs it)",
                pypiserver.display()
            )
        })?;
    let peer_url = format!("http://127.0.0.1:{port}");
    let plain = load::client(args.concurrency);
    wait_ready(&plain, &format!("{peer_url}/simple/")).await?;

    let project = "bench-pkg";
    let peers = [
        Peer {
            name: "arca",
            upload: format!("{}/pypi/py/", arca.url),
            page: format!("{}/pypi/py/simple/{project}/", arca.url),
            file: format!(
                "{}/pypi/py/files/{project}/1.0.0/bench_pkg-1.0.0-py3-none-any.whl",
                arca.url
            ),
            http: arca_http.clone(),
        },
        Peer {
            name: "pypiserver",
            upload: format!("{peer_url}/"),
            page: format!("{peer_url}/simple/{project}/"),
            file: format!("{peer_url}/packages/bench_pkg-1.0.0-py3-none-any.whl"),
            http: plain.clone(),
        },
    ];
    let payload = vec![7u8; 16 * 1024];
    for peer in &peers {
        let started = Instant::now();
        for v in 0..args.versions {
            upload(peer, project, &format!("1.0.{v}"), &payload).await?;
        }
        eprintln!(
            "{}: {} versions uploaded in {:.1} s",
            peer.name,
            args.versions,
            started.elapsed().as_secs_f64()
        );
    }

    let mut rows = Vec::new();
    for (case, accept) in [
        (
            "simple page",
            "application/vnd.pypi.simple.v1+json, text/html;q=0.01",
        ),
        ("file download (16 KiB)", "*/*"),
    ] {
        let mut measured = Vec::new();
        for peer in &peers {
            let url = if case == "simple page" {
                &peer.page
            } else {
                &peer.file
            };
            measured.push(measure(&peer.http, url, accept, args.concurrency, args.requests).await?);
        }
        rows.push(Case {
            name: case.to_string(),
            measured,
        });
    }

    let big = vec![3u8; 10 << 20];
    let mut publish = Vec::new();
    for peer in &peers {
        let mut times = Vec::new();
        for i in 0..args.publishes {
            let mut payload = big.clone();
            payload[0] = i as u8;
            let started = Instant::now();
            upload(peer, "bench-big", &format!("2.0.{i}"), &payload).await?;
            times.push(started.elapsed());
        }
        publish.push(median_ms(&mut times));
    }
    let _ = child.kill();
    let _ = child.wait();

    let table = results_table("pypiserver", &rows, publish);
    println!(
        "{} versions, {} clients, {} requests per case\n{table}",
        args.versions, args.concurrency, args.requests
    );
    Ok(())
}
