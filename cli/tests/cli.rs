//! The real `arca` binary: a server process, and client commands run as processes.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use arca_chaos::content::sha256_hex;
use arca_chaos::{wait_until, ArcaProcess, ProcessOptions};

const ARCA: &str = env!("CARGO_BIN_EXE_arca");

fn server(dir: &Path) -> ArcaProcess {
    let mut options = ProcessOptions::new(ARCA, dir.join("data"));
    // Small chunks so that modest test files have many.
    options.env = vec![
        ("ARCA_CHUNKING__MIN_SIZE".into(), "16384".into()),
        ("ARCA_CHUNKING__AVG_SIZE".into(), "65536".into()),
        ("ARCA_CHUNKING__MAX_SIZE".into(), "262144".into()),
    ];
    ArcaProcess::must_start(options)
}

fn arca(server: &ArcaProcess, args: &[&str]) -> Output {
    Command::new(ARCA)
        .args(args)
        .env("ARCA_SERVER", server.base_url())
        .env("ARCA_TOKEN", token(server))
        .output()
        .expect("run arca")
}

/// A session token of the server's bootstrap account (signed in once per server).
fn token(server: &ArcaProcess) -> String {
    static TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
    let base = server.base_url();
    let mut tokens = TOKENS.lock().expect("lock");
    if let Some((_, token)) = tokens.iter().find(|(b, _)| *b == base) {
        return token.clone();
    }
    let token = std::thread::scope(|s| {
        s.spawn(|| server.admin_token_blocking())
            .join()
            .expect("sign in")
    });
    tokens.push((base, token.clone()));
    token
}

/// A client that sends the bootstrap account's token.
fn http_client(server: &ArcaProcess) -> reqwest::Client {
    arca_chaos::credentials::authorized(reqwest::Client::builder(), Some(&token(server)))
        .build()
        .expect("client")
}

fn must_arca(server: &ArcaProcess, args: &[&str]) -> String {
    let output = arca(server, args);
    assert!(
        output.status.success(),
        "arca {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

fn must_json(server: &ArcaProcess, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    serde_json::from_str(&must_arca(server, &all)).expect("json output")
}

fn random_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

#[test]
fn push_pull_ls_stat_and_rm_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path());
    assert!(must_arca(&server, &["repo", "create", "builds"]).contains("created repository builds"));
    let created = must_json(&server, &["repo", "create", "releases", "--immutable"]);
    assert_eq!(created["immutable"], true);

    let data = random_bytes(1_500_000, 1);
    let file = dir.path().join("app.tar.gz");
    std::fs::write(&file, &data).expect("write");
    let pushed = must_json(
        &server,
        &[
            "push",
            file.to_str().expect("path"),
            "builds/app/1.0/app.tar.gz",
        ],
    );
    assert_eq!(pushed["sha256"], sha256_hex(&data));
    assert_eq!(pushed["size"], 1_500_000);
    assert!(pushed["chunks"].as_u64().expect("chunks") > 3);
    let table = must_arca(
        &server,
        &[
            "push",
            file.to_str().expect("path"),
            "builds/app/latest.tar.gz",
        ],
    );
    assert!(table.contains("pushed builds/app/latest.tar.gz"), "{table}");
    assert!(
        table.contains("0 new"),
        "second push is fully deduplicated: {table}"
    );

    let listed = must_json(&server, &["ls", "builds/app/"]);
    let paths: Vec<&str> = listed["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, vec!["app/1.0/app.tar.gz", "app/latest.tar.gz"]);
    assert!(must_arca(&server, &["ls", "builds"]).contains("app/1.0/app.tar.gz"));

    let stat = must_json(&server, &["stat", "builds/app/1.0/app.tar.gz"]);
    assert_eq!(stat["sha256"], sha256_hex(&data));
    assert_eq!(stat["blake3"], blake3::hash(&data).to_hex().as_str());
    assert!(must_arca(&server, &["stat", "builds/app/1.0/app.tar.gz"]).contains(&sha256_hex(&data)));

    let out = dir.path().join("pulled.tar.gz");
    let pulled = must_json(
        &server,
        &[
            "pull",
            "builds/app/1.0/app.tar.gz",
            "-o",
            out.to_str().expect("path"),
        ],
    );
    assert_eq!(pulled["verified"], true);
    assert_eq!(std::fs::read(&out).expect("read"), data);

    let repos = must_json(&server, &["repo", "ls"]);
    let builds = &repos["repositories"][0];
    assert_eq!(builds["name"], "builds");
    assert_eq!(builds["artifacts"], 2);
    assert_eq!(builds["physical_bytes"], 1_500_000);
    assert!(must_arca(&server, &["repo", "ls"]).contains("releases"));

    must_arca(&server, &["rm", "builds/app/latest.tar.gz"]);
    let missing = arca(
        &server,
        &[
            "pull",
            "builds/app/latest.tar.gz",
            "-o",
            out.to_str().expect("path"),
        ],
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("ARTIFACT_NOT_FOUND"));

    // Immutable repository: a changed file is refused with the server's code.
    must_arca(
        &server,
        &["push", file.to_str().expect("path"), "releases/app.tar.gz"],
    );
    std::fs::write(&file, random_bytes(1000, 2)).expect("write");
    let refused = arca(
        &server,
        &["push", file.to_str().expect("path"), "releases/app.tar.gz"],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("IMMUTABLE"));
}

/// A server that answers every request with `body` and a wrong `X-Checksum-Sha256`.
fn lying_server(body: &'static [u8]) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let header = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Checksum-Sha256: {}\r\nConnection: close\r\n\r\n",
                body.len(),
                "0".repeat(64)
            );
            let _ = stream.write_all(header.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    addr
}

#[test]
fn pull_refuses_bytes_whose_sha256_does_not_match() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = lying_server(b"tampered bytes");
    let out = dir.path().join("file.bin");
    let output = Command::new(ARCA)
        .args(["pull", "repo/file.bin", "-o", out.to_str().expect("path")])
        .env("ARCA_SERVER", format!("http://{addr}"))
        .output()
        .expect("run arca");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("sha256 mismatch"));
    assert!(!out.exists(), "nothing is written on a mismatch");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(leftovers.is_empty(), "no partial file is left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_leaves_nothing_and_acknowledged_uploads_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = server(dir.path());
    let http = http_client(&server);
    let base = server.base_url();
    assert_eq!(
        http.post(format!("{base}/api/v1/repos"))
            .json(&serde_json::json!({"name": "ci"}))
            .send()
            .await
            .expect("create")
            .status(),
        201
    );
    // Large enough that most of its chunks are written without the WAL and made durable by a
    // flush before the 201: a kill -9 right after must not lose them.
    let kept = random_bytes(24 << 20, 3);
    let ack = http
        .put(format!("{base}/files/ci/kept.bin"))
        .body(kept.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(ack.status(), 201);

    // Stream an upload that never finishes: 4 MiB sent of a promised 64 MiB.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let url = format!("{base}/files/ci/partial.bin");
    let upload_client = http.clone();
    let upload = tokio::spawn(async move {
        let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
        upload_client
            .put(url)
            .header("content-length", 64 << 20)
            .body(body)
            .send()
            .await
    });
    for i in 0..4u8 {
        tx.send(Ok(random_bytes(1 << 20, 10 + i)))
            .await
            .expect("send");
    }
    // Wait until the server has taken in what we sent (so the kill lands mid-ingest).
    let metrics_url = format!("{base}/metrics");
    wait_until(
        "server to receive 4 MiB",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let http = http.clone();
            let metrics_url = metrics_url.clone();
            async move {
                let text = http
                    .get(&metrics_url)
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                let received: f64 = text
                    .lines()
                    .find(|l| l.starts_with("arca_http_received_bytes_total"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                (received >= ((24 << 20) + (4 << 20)) as f64).then_some(())
            }
        },
    )
    .await
    .expect("upload in progress");
    server.must_kill();
    drop(tx);
    let _ = upload.await;

    server.must_restart();
    let base = server.base_url();
    let list: serde_json::Value = http
        .get(format!("{base}/api/v1/repos/ci/files"))
        .send()
        .await
        .expect("ls")
        .json()
        .await
        .expect("json");
    let paths: Vec<&str> = list["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert_eq!(
        paths,
        vec!["kept.bin"],
        "only the acknowledged upload is visible"
    );
    let got = http
        .get(format!("{base}/files/ci/kept.bin"))
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(sha256_hex(&got), sha256_hex(&kept));
    let repo: serde_json::Value = http
        .get(format!("{base}/api/v1/repos/ci"))
        .send()
        .await
        .expect("repo")
        .json()
        .await
        .expect("json");
    assert_eq!(repo["logical_bytes"], kept.len());
    assert_eq!(repo["physical_bytes"], kept.len());
    // The interrupted upload's chunks were swept at start-up: pushing its first MiB again
    // writes new chunks instead of finding leftovers.
    let retry = http
        .put(format!("{base}/files/ci/partial.bin"))
        .body(random_bytes(1 << 20, 10))
        .send()
        .await
        .expect("put");
    assert_eq!(retry.status(), 201);
    let retry: serde_json::Value = retry.json().await.expect("json");
    assert_eq!(
        retry["new_chunks"], retry["chunks"],
        "no orphaned chunk survived the restart"
    );
}

fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_request_names_it_and_the_id_comes_back() {
    // Architecture review: log lines of the write path carried nothing that tied them to a
    // request, a repository, a node or a region.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = ProcessOptions::new(ARCA, dir.path().join("data"));
    options.extra_args.push("--log-json".into());
    // tower_http's request and response events are at debug.
    options
        .env
        .push(("ARCA_LOG".into(), "info,tower_http=debug".into()));
    let server = ArcaProcess::must_start(options);
    let http = http_client(&server);
    let base = server.base_url();
    let created = http
        .post(format!("{base}/api/v1/repos"))
        .json(&serde_json::json!({"name": "traced"}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let stored = http
        .put(format!("{base}/files/traced/a.bin"))
        .header("x-request-id", "ci-build-4711")
        .body("hello")
        .send()
        .await
        .expect("put");
    assert_eq!(stored.status(), 201);
    assert_eq!(
        stored
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("ci-build-4711")
    );
    // No id, or one that is not a short printable token: the node makes one.
    for sent in [None, Some("has space"), Some(&*"x".repeat(200))] {
        let mut request = http.put(format!("{base}/files/traced/b.bin")).body("hello");
        if let Some(sent) = sent {
            request = request.header("x-request-id", sent);
        }
        let response = request.send().await.expect("put");
        assert!(response.status().is_success(), "{}", response.status());
        let id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("an id")
            .to_string();
        assert_eq!(id.len(), 32, "{id}");
        assert!(Some(id.as_str()) != sent);
    }
    let traced = wait_until(
        "a log line of the request with its id, repository, region and node",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let found = server.log().lines().any(|line| {
                line.contains("\"request_id\":\"ci-build-4711\"")
                    && line.contains("\"repo\":\"traced\"")
                    && line.contains("\"region\":\"local\"")
                    && line.contains("\"node\":1")
            });
            async move { found.then_some(()) }
        },
    )
    .await;
    assert!(traced.is_ok(), "{traced:?}:\n{}", server.log());
}

/// Runs `arca` with `stdin` as its input, as the bootstrap account unless `token` says otherwise.
fn arca_with_stdin(
    server: &ArcaProcess,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: &str,
) -> Output {
    use std::io::Write;
    let mut child = Command::new(ARCA)
        .args(args)
        .env("ARCA_SERVER", server.base_url())
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run arca");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("arca")
}

#[test]
fn login_tokens_roles_and_the_audit_log_through_the_cli_and_no_log_line_holds_a_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = ProcessOptions::new(ARCA, dir.path().join("data"));
    options.extra_args.push("--log-json".into());
    // Everything the server logs, requests and their headers' handling included.
    options
        .env
        .push(("ARCA_LOG".into(), "debug,h2=info,hyper=info".into()));
    let mut server = ArcaProcess::must_start(options);
    let password = arca_chaos::credentials::admin_password(server.data_dir()).expect("password");
    let config_dir = dir.path().join("config");
    let config = config_dir.to_str().expect("path");
    // `arca login --password-stdin` stores a session in the config directory, mode 0600.
    let login = arca_with_stdin(
        &server,
        &["login", "--user", "admin", "--password-stdin"],
        &[("ARCA_CONFIG_DIR", config)],
        &password,
    );
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let stored = config_dir.join("credentials.json");
    let mode = std::fs::metadata(&stored)
        .expect("credentials")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let as_admin = |args: &[&str]| {
        let output = Command::new(ARCA)
            .args(args)
            .env("ARCA_SERVER", server.base_url())
            .env("ARCA_CONFIG_DIR", config)
            .env_remove("ARCA_TOKEN")
            .output()
            .expect("arca");
        assert!(
            output.status.success(),
            "arca {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    };
    assert!(as_admin(&["whoami"]).contains("user:admin"));
    as_admin(&["repo", "create", "builds"]);
    // A service account for CI, with a token scoped to one repository.
    as_admin(&["user", "create", "ci", "--service"]);
    as_admin(&["role", "grant", "write", "builds/**", "--service", "ci"]);
    let created: serde_json::Value = serde_json::from_str(&as_admin(&[
        "token",
        "create",
        "--owner",
        "ci",
        "--scope",
        "builds/**:write",
        "--expires",
        "30d",
        "--output",
        "json",
    ]))
    .expect("json");
    let token = created["token"].as_str().expect("token").to_string();
    let id = created["id"].as_str().expect("id").to_string();
    assert!(as_admin(&["token", "ls", "--owner", "ci"]).contains(&id));
    assert!(as_admin(&["role", "ls"]).contains("service:ci"));
    // CI pushes with the token; it may not create repositories.
    let file = dir.path().join("app.bin");
    std::fs::write(&file, random_bytes(100_000, 8)).expect("write");
    let with_token = |args: &[&str]| {
        Command::new(ARCA)
            .args(args)
            .env("ARCA_SERVER", server.base_url())
            .env("ARCA_TOKEN", &token)
            .output()
            .expect("arca")
    };
    let pushed = with_token(&[
        "push",
        file.to_str().expect("path"),
        "builds/app/1.0/app.bin",
    ]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let refused = with_token(&["repo", "create", "other"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("DENIED (403)"));
    // A wrong password, and a revoked token.
    let wrong = arca_with_stdin(
        &server,
        &["login", "--user", "admin", "--password-stdin"],
        &[("ARCA_CONFIG_DIR", config)],
        "not the password at all",
    );
    assert!(!wrong.status.success());
    as_admin(&["token", "revoke", &id]);
    let revoked = with_token(&["ls", "builds"]);
    assert!(!revoked.status.success());
    assert!(String::from_utf8_lossy(&revoked.stderr).contains("401"));
    // The audit log has all of it, exports it as JSON lines, and verifies.
    let exported = wait_until(
        "the audit log holds the push, the denial and the revocation",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let lines = as_admin(&["audit", "export"]);
            let ok = lines.contains("/files/builds/app/1.0/app.bin")
                && lines.contains("denied:forbidden")
                && lines.contains("token.revoke")
                && lines.contains("\"login\"");
            std::future::ready(ok.then_some(lines))
        },
    );
    let exported = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(exported)
        .expect("audit");
    for line in exported.lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(record["hash"].is_string() && record["seq"].is_u64());
    }
    assert!(as_admin(&["audit", "verify"]).contains("intact"));
    as_admin(&["logout"]);
    let after = Command::new(ARCA)
        .args(["whoami"])
        .env("ARCA_SERVER", server.base_url())
        .env("ARCA_CONFIG_DIR", config)
        .env_remove("ARCA_TOKEN")
        .output()
        .expect("arca");
    assert!(!after.status.success(), "signed out");

    // No line the server logged holds a secret this test used.
    let session = std::fs::read_to_string(&stored).unwrap_or_default();
    server.must_stop(Duration::from_secs(20));
    let log = server.log();
    assert!(log.lines().count() > 20, "the server logged");
    for secret in [
        password.as_str(),
        &token,
        &token[5..],
        "not the password at all",
    ] {
        assert!(!log.contains(secret), "a secret is in the server log");
    }
    assert!(
        !session.contains("eyJ") || !log.contains(session.trim()),
        "a session token is in the log"
    );
}

#[test]
fn https_serves_with_hsts_and_the_cli_signs_in_over_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let certs_dir = certs.to_str().expect("path");
    for args in [
        vec!["certs", "init", "--dir", certs_dir],
        vec![
            "certs",
            "issue",
            "--ca-dir",
            certs_dir,
            "--name",
            "web",
            "--region",
            "local",
            "--host",
            "127.0.0.1",
        ],
    ] {
        let output = Command::new(ARCA).args(&args).output().expect("arca certs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut options = ProcessOptions::new(ARCA, dir.path().join("data"));
    options.extra_args.extend([
        "--tls-cert".to_string(),
        certs.join("web.pem").display().to_string(),
        "--tls-key".to_string(),
        certs.join("web.key").display().to_string(),
    ]);
    let server = ArcaProcess::must_start(options);
    let base = format!("https://{}", server.http_addr);
    let password = arca_chaos::credentials::admin_password(server.data_dir()).expect("password");
    let ca = std::fs::read(certs.join("ca.pem")).expect("ca");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
            .build()
            .expect("client");
        let response = client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("https");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .headers()
                .get("strict-transport-security")
                .and_then(|v| v.to_str().ok()),
            Some("max-age=31536000")
        );
        // Plain HTTP on the TLS port is not served.
        let plain = reqwest::Client::new()
            .get(format!("http://{}/healthz", server.http_addr))
            .send()
            .await;
        assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    });
    let config = dir.path().join("config");
    let login = {
        use std::io::Write;
        let mut child = Command::new(ARCA)
            .args(["login", "--password-stdin", "--server", &base])
            .env("ARCA_CA_CERT", certs.join("ca.pem"))
            .env("ARCA_CONFIG_DIR", &config)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("arca");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(password.as_bytes())
            .expect("write");
        child.wait_with_output().expect("arca")
    };
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let whoami = Command::new(ARCA)
        .args(["whoami", "--server", &base])
        .env("ARCA_CA_CERT", certs.join("ca.pem"))
        .env("ARCA_CONFIG_DIR", &config)
        .output()
        .expect("arca");
    assert!(String::from_utf8_lossy(&whoami.stdout).contains("user:admin"));
}
