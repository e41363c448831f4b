//! Arca's Helm repository against nginx serving the same `index.yaml` as a static file, side by
//! side in one run on this machine: a repository of `--charts` charts × `--versions` versions,
//! the time an index takes to assemble after an upload (Arca keeps each chart's entries and
//! re-renders only the chart an upload touched), its size, and `index.yaml` fetched at
//! `--concurrency` clients without a validator (plain and gzip-encoded, as helm asks for it:
//! nginx sends a pre-compressed `index.yaml.gz` with `gzip_static`) and with `If-None-Match`
//! (helm's `repo update` after the first), with p99.
//!
//! ```sh
//! cargo run --release -p arca-benches --bin helm-bench -- --charts 500 --versions 20
//! ```
//!
//! nginx comes from Debian (`nginx-light`, installed by `scripts/setup.sh`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use arca_benches::compare::{scratch, wait_ready, Server};
use arca_benches::load;
use arca_benches::packages::{
    measure_with, median_ms, results_table, start_nginx, stop_nginx, Case,
};
use arca_chaos::content::tar_gz;
use clap::Parser;
use futures::StreamExt as _;

#[derive(Parser)]
#[command(name = "helm-bench", about = "Arca's Helm index against nginx")]
struct Args {
    /// The `arca` binary.
    #[arg(long, default_value = "target/release/arca")]
    arca: PathBuf,
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    #[arg(long, default_value_t = 500)]
    charts: u64,
    /// Versions of each chart.
    #[arg(long, default_value_t = 20)]
    versions: u64,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per measured case.
    #[arg(long, default_value_t = 600)]
    requests: u64,
    /// Scratch directory (a temporary one by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A chart archive of `name` `version`.
fn chart(name: &str, version: &str) -> Vec<u8> {
    let chart_yaml = format!(
        "apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"{version}\"\ndescription: benchmark chart {name}\ntype: application\nkeywords: [bench, helm]\nmaintainers:\n  - name: arca\n    email: arca@example.com\n"
    );
    tar_gz(&[
        (&format!("{name}/Chart.yaml"), chart_yaml.as_bytes()),
        (&format!("{name}/values.yaml"), b"replicas: 1\n"),
    ])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (dir, _guard) = scratch(args.dir.clone())?;
    let arca = Server::arca(&args.arca, &dir).await?;
    let http = load::client_with_token(args.concurrency, arca.token.as_deref());
    load::create_arca_repo(&http, &arca.url, "charts", "helm").await?;
    let repository = format!("{}/helm/charts", arca.url);

    // Uploads, 8 at a time.
    let started = Instant::now();
    let uploads = (0..args.versions).flat_map(|v| (0..args.charts).map(move |c| (c, v)));
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(uploads)
        .map(|(c, v)| {
            let (http, url) = (http.clone(), format!("{repository}/api/charts"));
            async move {
                let body = chart(&format!("chart-{c:04}"), &format!("1.{v}.0"));
                let response = http.post(url).body(body).send().await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "upload: {}",
                    response.status()
                );
                Ok(())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let total = args.charts * args.versions;
    let upload_seconds = started.elapsed().as_secs_f64();
    eprintln!("arca: {total} chart versions uploaded in {upload_seconds:.1} s");

    // The index right after an upload (assembled from the fragments), five times.
    let mut assembly = Vec::new();
    let mut index = bytes::Bytes::new();
    for i in 0..5u64 {
        let body = chart("chart-0000", &format!("9.{i}.0"));
        let response = http
            .post(format!("{repository}/api/charts"))
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "upload: {}",
            response.status()
        );
        let begun = Instant::now();
        index = http
            .get(format!("{repository}/index.yaml"))
            .send()
            .await?
            .bytes()
            .await?;
        assembly.push(begun.elapsed());
    }
    let assembly_ms = median_ms(&mut assembly);
    let entries: serde_json::Value = serde_json::from_slice(&index)?;
    let listed: usize = entries["entries"]
        .as_object()
        .context("entries")?
        .values()
        .map(|v| v.as_array().map_or(0, Vec::len))
        .sum();
    anyhow::ensure!(
        listed as u64 == total + 5,
        "the index lists {listed} versions"
    );

    let root = dir.join("static");
    std::fs::create_dir_all(root.join("helm/charts"))?;
    std::fs::write(root.join("helm/charts/index.yaml"), &index)?;
    let gzipped = {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&index)?;
        encoder.finish()?
    };
    std::fs::write(root.join("helm/charts/index.yaml.gz"), &gzipped)?;
    let (mut child, nginx_url) = start_nginx(&args.nginx, &dir, &root)?;
    let plain = load::client(args.concurrency);
    let nginx_repository = format!("{nginx_url}/helm/charts");
    wait_ready(&plain, &format!("{nginx_repository}/index.yaml")).await?;

    let peers = [
        (&http, repository.as_str()),
        (&plain, nginx_repository.as_str()),
    ];
    let mut rows = Vec::new();
    for (case, gzip, conditional) in [
        ("index.yaml (200)", false, false),
        ("index.yaml (200, gzip)", true, false),
        ("index.yaml (If-None-Match: 304)", true, true),
    ] {
        let mut measured = Vec::new();
        for (client, base) in peers {
            let url = format!("{base}/index.yaml");
            let mut headers = vec![("accept", "*/*".to_string())];
            if gzip {
                headers.push(("accept-encoding", "gzip".to_string()));
            }
            if conditional {
                let mut probe = client.get(&url);
                for (name, value) in &headers {
                    probe = probe.header(*name, value);
                }
                let response = probe.send().await?;
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
        "{} charts × {} versions ({total} entries, {} bytes of index.yaml), {} clients, {} requests per case\n\
         uploads: {total} in {upload_seconds:.1} s ({:.0}/s, 8 at a time); index assembled after an upload: {assembly_ms:.1} ms (median of 5)\n{table}",
        args.charts,
        args.versions,
        index.len(),
        args.concurrency,
        args.requests,
        total as f64 / upload_seconds,
    );
    Ok(())
}
