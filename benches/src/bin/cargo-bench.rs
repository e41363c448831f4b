//! Arca's cargo registry against nginx serving the same sparse index file as a static file,
//! side by side in one run on this machine: the index file of a crate with `--versions`
//! versions (what cargo reads on every resolution), fetched without a validator and with
//! `If-None-Match` (cargo's revalidation, a `304`), and a `.crate` download, each at
//! `--concurrency` clients. Arca renders the file from the state machine on every request;
//! nginx serves bytes from its page cache, the ceiling a static registry (a git or S3 index
//! behind a web server) reaches.
//!
//! ```sh
//! cargo run --release -p arca-benches --bin cargo-bench -- --versions 1000 --concurrency 64
//! ```
//!
//! nginx comes from Debian (`nginx-light`, installed by `scripts/setup.sh`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use arca_benches::compare::{scratch, wait_ready, Server};
use arca_benches::load;
use arca_benches::packages::{measure_with, results_table, start_nginx, stop_nginx, Case};
use arca_chaos::cargo::publish_frame;
use arca_chaos::content::tar_gz;
use clap::Parser;

#[derive(Parser)]
#[command(name = "cargo-bench", about = "Arca's cargo index against nginx")]
struct Args {
    /// The `arca` binary.
    #[arg(long, default_value = "target/release/arca")]
    arca: PathBuf,
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// Versions of the benchmarked crate.
    #[arg(long, default_value_t = 1000)]
    versions: u64,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per measured case.
    #[arg(long, default_value_t = 3000)]
    requests: u64,
    /// Scratch directory (a temporary one by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (dir, _guard) = scratch(args.dir.clone())?;
    let arca = Server::arca(&args.arca, &dir).await?;
    let http = load::client_with_token(args.concurrency, arca.token.as_deref());
    load::create_arca_repo(&http, &arca.url, "rs", "cargo").await?;
    let registry = format!("{}/cargo/rs", arca.url);

    // A crate of --versions versions, published one after the other as cargo does.
    let name = "bench-crate";
    let started = Instant::now();
    let mut first_crate = Vec::new();
    for v in 0..args.versions {
        let version = format!("1.0.{v}");
        let root = format!("{name}-{version}");
        let manifest = format!("[package]\nname = \"{name}\"\nversion = \"{version}\"\n");
        let payload = vec![(v % 251) as u8; 4096];
        let file = tar_gz(&[
            (&format!("{root}/Cargo.toml"), manifest.as_bytes()),
            (&format!("{root}/src/lib.rs"), &payload),
        ]);
        if v == 0 {
            first_crate.clone_from(&file);
        }
        let response = http
            .put(format!("{registry}/api/v1/crates/new"))
            .body(publish_frame(name, &version, &file))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "publish {version}: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "arca: {} versions published in {publish_seconds:.1} s",
        args.versions
    );

    // The same index file and .crate, as static files for nginx.
    let index_path = format!("index/be/nc/{name}");
    let index = http
        .get(format!("{registry}/{index_path}"))
        .send()
        .await?
        .bytes()
        .await?;
    let root = dir.join("static");
    let static_index = root.join("cargo/rs").join(&index_path);
    let download = format!("api/v1/crates/{name}/1.0.0/download");
    let static_crate = root.join("cargo/rs").join(&download);
    for (path, bytes) in [
        (&static_index, index.as_ref()),
        (&static_crate, &first_crate),
    ] {
        std::fs::create_dir_all(path.parent().context("a parent")?)?;
        std::fs::write(path, bytes)?;
    }
    let (mut child, nginx_url) = start_nginx(&args.nginx, &dir, &root)?;
    let plain = load::client(args.concurrency);
    let nginx_registry = format!("{nginx_url}/cargo/rs");
    wait_ready(&plain, &format!("{nginx_registry}/{index_path}")).await?;

    let peers = [
        (&http, registry.as_str()),
        (&plain, nginx_registry.as_str()),
    ];
    let mut rows = Vec::new();
    for (case, path, conditional) in [
        ("index file (200)", index_path.as_str(), false),
        ("index file (If-None-Match: 304)", index_path.as_str(), true),
        (".crate download", download.as_str(), false),
    ] {
        let mut measured = Vec::new();
        for (client, base) in peers {
            let url = format!("{base}/{path}");
            let mut headers = vec![("accept", "*/*".to_string())];
            if conditional {
                let response = client.get(&url).send().await?;
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .context("no ETag")?
                    .to_string();
                headers.push(("if-none-match", etag));
            }
            measured
                .push(measure_with(client, &url, &headers, args.concurrency, args.requests).await?);
        }
        rows.push(Case {
            name: case.to_string(),
            measured,
        });
    }
    stop_nginx(&mut child);

    let table = results_table("nginx", &rows, Vec::new());
    println!(
        "{} versions ({} bytes of index), {} clients, {} requests per case; {} publishes in {publish_seconds:.1} s\n{table}",
        args.versions,
        index.len(),
        args.concurrency,
        args.requests,
        args.versions,
    );
    Ok(())
}
