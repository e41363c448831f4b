//! Reading the healed cluster for the checker: convergence (`arca cluster verify`), roles,
//! divergent writes, every key on every node, every listed file on every node.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::checker::{acceptable_final, FinalRead, ListedRead, Observations, State};
use crate::cluster::{region_name, Cluster};
use crate::content::sha256_hex;
use crate::history::Op;
use crate::oci::{self, BlobRead, OCI_KEY_PREFIX, OCI_REPO};
use crate::workload::{http_client, IMMUTABLE_REPO, MUTABLE_REPO};

/// Polls `arca cluster verify`, asked of a node of every region that is up (each region's
/// verify covers the regions it knows of), until every answer is consistent and every region
/// reports the same sequence and state digest, or `timeout` passes.
pub async fn wait_converged(cluster: &Cluster, timeout: Duration, observations: &mut Observations) {
    let started = Instant::now();
    while started.elapsed() < timeout {
        let mut reports = Vec::new();
        let mut all_consistent = true;
        let mut heads = BTreeSet::new();
        let mut covered = BTreeSet::new();
        for index in cluster.endpoints.up() {
            let Some(admin) = cluster.admin_addr(index) else {
                all_consistent = false;
                continue;
            };
            match cluster.cli_json(&["cluster", "verify"], &admin).await {
                Ok((ok, report)) => {
                    all_consistent &= ok && report["consistent"] == true;
                    for region in report["regions"].as_array().into_iter().flatten() {
                        covered.insert(region["region"].as_str().unwrap_or_default().to_string());
                        heads.insert((
                            region["seq"].as_u64().unwrap_or_default(),
                            region["digest"].as_str().unwrap_or_default().to_string(),
                        ));
                    }
                    reports
                        .push(serde_json::json!({"asked": region_name(index), "report": report}));
                }
                Err(error) => {
                    all_consistent = false;
                    reports.push(serde_json::json!({"asked": region_name(index), "error": format!("{error:#}")}));
                }
            }
        }
        let every_region = cluster.endpoints.up().len() == covered.len();
        observations.verify_report = serde_json::json!({
            "regions_covered": covered,
            "heads": heads.iter().map(|(seq, digest)| serde_json::json!({"seq": seq, "digest": digest})).collect::<Vec<_>>(),
            "reports": reports,
        });
        if all_consistent && heads.len() == 1 && every_region {
            observations.verify_consistent = true;
            observations.convergence_ms = Some(started.elapsed().as_millis() as u64);
            return;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

/// Roles and divergent writes, as every region's CLI reports them.
pub async fn roles_and_divergence(cluster: &Cluster, observations: &mut Observations) {
    let mut primaries = BTreeSet::new();
    for index in 0..cluster.regions.len() {
        let Some(admin) = cluster.admin_addr(index) else {
            continue;
        };
        if let Ok((true, status)) = cluster.cli_json(&["cluster", "status"], &admin).await {
            for row in status["regions"].as_array().into_iter().flatten() {
                if row["name"] == region_name(index) && row["role"] == "primary" {
                    primaries.insert(region_name(index).to_string());
                }
            }
        }
        if let Ok((true, divergent)) = cluster.cli_json(&["cluster", "divergent"], &admin).await {
            for write in divergent["divergent"].as_array().into_iter().flatten() {
                let summary = write["summary"].as_str().unwrap_or_default().to_string();
                if !observations.divergent.contains(&summary) {
                    observations.divergent.push(summary);
                }
            }
        }
    }
    observations.primaries = primaries.into_iter().collect();
}

async fn get_state(request: reqwest::RequestBuilder) -> (Option<State>, String) {
    match request.send().await {
        Ok(response) => match response.status().as_u16() {
            200 => match response.bytes().await {
                Ok(body) => (Some(Some(sha256_hex(&body))), String::new()),
                Err(error) => (None, format!("body: {error}")),
            },
            404 => (Some(None), String::new()),
            status => (
                None,
                format!("{status} {}", response.text().await.unwrap_or_default()),
            ),
        },
        Err(error) => (None, error.to_string()),
    }
}

/// Reads every key of the history on every node of every region that is up. A node that does
/// not yet serve an acceptable state is asked again for a few seconds (followers apply a
/// moment after the leader), within an overall retry budget so a region that never converges
/// does not stall the check.
pub async fn final_reads(cluster: &Cluster, history: &[Op], observations: &mut Observations) {
    let http = http_client();
    let retry_until = Instant::now() + Duration::from_secs(30);
    let mut keys: Vec<&str> = history.iter().map(|op| op.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    for index in cluster.endpoints.up() {
        let endpoint = &cluster.endpoints.regions[index];
        for (node, url) in &endpoint.nodes {
            for key in &keys {
                let ops: Vec<&Op> = history.iter().filter(|op| op.key == *key).collect();
                let acceptable = acceptable_final(&ops);
                let request = match (oci::parse_key(key), crate::packages::file_path(key)) {
                    (Some((name, tag)), _) => http
                        .get(format!("{url}/v2/{name}/manifests/{tag}"))
                        .header(reqwest::header::ACCEPT, oci::MANIFEST_TYPE),
                    (None, Some(path)) => http.get(format!("{url}{path}")),
                    (None, None) => http.get(format!("{url}/files/{key}")),
                };
                let mut attempt = 0;
                let (state, detail) = loop {
                    let Some(request) = request.try_clone() else {
                        break (None, "request cannot be repeated".into());
                    };
                    let (state, detail) = get_state(request).await;
                    let fine = matches!(&state, Some(s) if acceptable.contains(s));
                    attempt += 1;
                    if fine || attempt >= 10 || Instant::now() > retry_until {
                        break (state, detail);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                };
                observations.final_reads.push(FinalRead {
                    region: endpoint.name.clone(),
                    node: *node,
                    key: key.to_string(),
                    state,
                    detail,
                });
            }
        }
    }
}

/// Lists both repositories on every node of every region that is up and reads every listed
/// file back.
pub async fn listed_reads(cluster: &Cluster, observations: &mut Observations) {
    let http = http_client();
    for index in cluster.endpoints.up() {
        let endpoint = &cluster.endpoints.regions[index];
        for (node, url) in &endpoint.nodes {
            for repo in [MUTABLE_REPO, IMMUTABLE_REPO] {
                let mut after: Option<String> = None;
                for _page in 0..100 {
                    let mut request = http
                        .get(format!("{url}/api/v1/repos/{repo}/files"))
                        .query(&[("limit", "1000")]);
                    if let Some(after) = &after {
                        request = request.query(&[("after", after.as_str())]);
                    }
                    let page: serde_json::Value = match request.send().await {
                        Ok(response) if response.status().is_success() => {
                            response.json().await.unwrap_or_default()
                        }
                        Ok(response) => {
                            observations.listed.push(ListedRead {
                                region: endpoint.name.clone(),
                                node: *node,
                                key: format!("{repo}/*"),
                                listed_sha256: "(listing)".into(),
                                read_sha256: None,
                                detail: format!("listing failed with {}", response.status()),
                            });
                            break;
                        }
                        Err(error) => {
                            observations.listed.push(ListedRead {
                                region: endpoint.name.clone(),
                                node: *node,
                                key: format!("{repo}/*"),
                                listed_sha256: "(listing)".into(),
                                read_sha256: None,
                                detail: format!("listing failed: {error}"),
                            });
                            break;
                        }
                    };
                    for file in page["files"].as_array().into_iter().flatten() {
                        let path = file["path"].as_str().unwrap_or_default();
                        let listed_sha256 = file["sha256"].as_str().unwrap_or_default().to_string();
                        let key = format!("{repo}/{path}");
                        let (state, detail) =
                            get_state(http.get(format!("{url}/files/{key}"))).await;
                        observations.listed.push(ListedRead {
                            region: endpoint.name.clone(),
                            node: *node,
                            key,
                            listed_sha256,
                            read_sha256: state.flatten(),
                            detail,
                        });
                    }
                    match page["next"].as_str() {
                        Some(next) => after = Some(next.to_string()),
                        None => break,
                    }
                }
            }
        }
    }
}

/// Lists the tags of every image on every node of every region that is up (the images of the
/// history and of `/v2/_catalog`), reads every listed tag's manifest and every blob it
/// references back by digest.
pub async fn listed_oci_reads(cluster: &Cluster, history: &[Op], observations: &mut Observations) {
    let http = http_client();
    let mut history_images: BTreeSet<String> = history
        .iter()
        .filter_map(|op| oci::parse_key(&op.key))
        .map(|(name, _)| name.to_string())
        .collect();
    history_images.retain(|name| name.starts_with(&format!("{OCI_REPO}/")));
    for index in cluster.endpoints.up() {
        let endpoint = &cluster.endpoints.regions[index];
        for (node, url) in &endpoint.nodes {
            let mut listed = |key: String, listed_sha256: String, read_sha256, detail| {
                observations.listed.push(ListedRead {
                    region: endpoint.name.clone(),
                    node: *node,
                    key,
                    listed_sha256,
                    read_sha256,
                    detail,
                })
            };
            let mut images = history_images.clone();
            match http
                .get(format!("{url}/v2/_catalog"))
                .query(&[("n", "1000")])
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => {
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    for name in body["repositories"].as_array().into_iter().flatten() {
                        if let Some(name) = name.as_str() {
                            if name.starts_with(&format!("{OCI_REPO}/")) {
                                images.insert(name.to_string());
                            }
                        }
                    }
                }
                Ok(response) => listed(
                    format!("{OCI_KEY_PREFIX}_catalog"),
                    "(listing)".into(),
                    None,
                    format!("catalog failed with {}", response.status()),
                ),
                Err(error) => listed(
                    format!("{OCI_KEY_PREFIX}_catalog"),
                    "(listing)".into(),
                    None,
                    format!("catalog failed: {error}"),
                ),
            }
            for name in &images {
                let tags: Vec<String> = match http
                    .get(format!("{url}/v2/{name}/tags/list"))
                    .query(&[("n", "1000")])
                    .send()
                    .await
                {
                    Ok(response) if response.status().is_success() => {
                        let body: serde_json::Value = response.json().await.unwrap_or_default();
                        body["tags"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|tag| tag.as_str().map(str::to_string))
                            .collect()
                    }
                    // An image with no content at all (never pushed there, or only refused).
                    Ok(response) if response.status().as_u16() == 404 => Vec::new(),
                    Ok(response) => {
                        listed(
                            format!("{OCI_KEY_PREFIX}{name}:*"),
                            "(listing)".into(),
                            None,
                            format!("tags/list failed with {}", response.status()),
                        );
                        continue;
                    }
                    Err(error) => {
                        listed(
                            format!("{OCI_KEY_PREFIX}{name}:*"),
                            "(listing)".into(),
                            None,
                            format!("tags/list failed: {error}"),
                        );
                        continue;
                    }
                };
                for tag in tags {
                    let key = format!("{OCI_KEY_PREFIX}{name}:{tag}");
                    let response = match oci::get_manifest(&http, url, name, &tag).await {
                        Ok(response) if response.status().as_u16() == 200 => response,
                        Ok(response) => {
                            let status = response.status();
                            listed(key, "(tagged)".into(), None, format!("manifest: {status}"));
                            continue;
                        }
                        Err(error) => {
                            listed(key, "(tagged)".into(), None, format!("manifest: {error}"));
                            continue;
                        }
                    };
                    let named = response
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.strip_prefix("sha256:"))
                        .unwrap_or("(no Docker-Content-Digest)")
                        .to_string();
                    let body = match response.bytes().await {
                        Ok(body) => body,
                        Err(error) => {
                            listed(key, named, None, format!("manifest body: {error}"));
                            continue;
                        }
                    };
                    listed(key.clone(), named, Some(sha256_hex(&body)), String::new());
                    let Some(blobs) = oci::referenced_blobs(&body) else {
                        listed(
                            key,
                            "(manifest)".into(),
                            None,
                            "the manifest does not parse".into(),
                        );
                        continue;
                    };
                    for blob in blobs {
                        let blob_key = format!("{OCI_KEY_PREFIX}{name}@{blob}");
                        let expected = blob.strip_prefix("sha256:").unwrap_or(&blob).to_string();
                        match oci::read_blob(&http, url, name, &blob).await {
                            BlobRead::Read(sha) => {
                                listed(blob_key, expected, Some(sha), String::new())
                            }
                            BlobRead::Failed(error) => listed(blob_key, expected, None, error),
                        }
                    }
                }
            }
        }
    }
}

/// A counter or gauge summed over a node's `/metrics` lines that contain `labels`.
pub async fn scrape(
    http: &reqwest::Client,
    base_url: &str,
    name: &str,
    labels: &str,
) -> Option<f64> {
    let text = http
        .get(format!("{base_url}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) || !rest.contains(labels) {
            continue;
        }
        if let Some(Ok(value)) = rest.rsplit(' ').next().map(str::parse::<f64>) {
            *total.get_or_insert(0.0) += value;
        }
    }
    Some(total.unwrap_or(0.0))
}

/// Recomputes the audit chain on a node of the primary and counts the intrusions it recorded.
pub async fn audit(cluster: &Cluster, observations: &mut Observations) {
    let http = http_client();
    let primary = &cluster.endpoints.regions[cluster.endpoints.primary()];
    let Some((_, url)) = primary.nodes.first() else {
        return;
    };
    if let Ok(response) = http.get(format!("{url}/api/v1/audit/verify")).send().await {
        if let Ok(report) = response.json::<serde_json::Value>().await {
            observations.audit_verify = Some(report);
        }
    }
    let mut after = 0u64;
    // Bounded: at most 200 pages of 1000 records.
    for _ in 0..200 {
        let page = http
            .get(format!("{url}/api/v1/audit"))
            .query(&[
                ("outcome", "denied".to_string()),
                ("after", after.to_string()),
                ("limit", "1000".to_string()),
            ])
            .send()
            .await;
        let Ok(page) = page else { return };
        let Ok(page) = page.json::<serde_json::Value>().await else {
            return;
        };
        for record in page["records"].as_array().into_iter().flatten() {
            let resource = record["resource"].as_str().unwrap_or_default();
            if resource.starts_with(&format!("/files/{}", crate::workload::INTRUDER_PREFIX)) {
                observations.audited_intrusions += record["count"].as_u64().unwrap_or(0);
            }
        }
        match page["next"].as_u64() {
            Some(next) => after = next,
            None => return,
        }
    }
}
