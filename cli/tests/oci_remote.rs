//! An OCI remote repository in front of Debian's `docker-registry` (distribution 2.8) with
//! htpasswd authentication on, driven by skopeo through the real binary: a cold pull, a warm
//! pull that downloads no blob again, a tag pushed upstream later visible at once, a moved tag
//! seen on revalidation, and pulls by tag and by digest with the upstream stopped.

mod clients;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use arca_chaos::content::sha256_hex;
use arca_chaos::oci::digest;
use arca_chaos::{ArcaProcess, ProcessOptions};
use clients::{must_ok, poll_until, ARCA};
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const USER: &str = "ci";
const PASSWORD: &str = "upstream-s3cret";

fn random_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed, 0x0d])
        .finalize_xof()
        .fill(&mut out);
    out
}

fn skopeo(args: &[&str]) -> std::process::Output {
    let mut all = vec!["--insecure-policy"];
    all.extend(args);
    Command::new("skopeo")
        .args(&all)
        .output()
        .unwrap_or_else(|e| panic!("cannot run skopeo ({e}); scripts/setup.sh installs it"))
}

/// Debian's registry on a free loopback port, with htpasswd auth, logging every request.
struct Upstream {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Upstream {
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        let hash = Command::new("python3")
            .args([
                "-W",
                "ignore",
                "-c",
                &format!(
                    "import crypt; print(crypt.crypt({PASSWORD:?}, crypt.mksalt(crypt.METHOD_BLOWFISH)))"
                ),
            ])
            .output()
            .expect("python3 makes the bcrypt hash");
        let hash = String::from_utf8(hash.stdout).expect("utf-8");
        assert!(hash.starts_with("$2"), "bcrypt hash: {hash:?}");
        std::fs::write(dir.join("htpasswd"), format!("{USER}:{}", hash.trim())).expect("htpasswd");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: upstream\n    path: {}\n",
                dir.join("data").display(),
                dir.join("htpasswd").display()
            ),
        )
        .expect("config");
        let log = dir.join("registry.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("docker-registry runs (scripts/setup.sh installs it)");
        let up = poll_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "docker-registry did not listen on {port}");
        Self {
            child: Some(child),
            port,
            log,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Requests in the registry's access log whose request line starts with `prefix`
    /// (`GET /v2/...`).
    fn requests(&self, prefix: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let needle = format!("\"{prefix}");
        log.lines().filter(|line| line.contains(&needle)).count()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An OCI layout holding one image per tag, each with a config and two layers.
struct Layout {
    dir: PathBuf,
    index: Vec<Value>,
}

impl Layout {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("layout");
        Self {
            dir,
            index: Vec::new(),
        }
    }

    fn add_blob(&self, data: &[u8]) -> String {
        std::fs::write(self.dir.join("blobs/sha256").join(sha256_hex(data)), data).expect("blob");
        digest(data)
    }

    /// Adds an image tagged `tag`.
    fn add_image(&mut self, tag: &str, seed: u8) {
        let layers: Vec<Vec<u8>> = vec![
            random_bytes(600_000, seed),
            random_bytes(90_000, seed + 100),
        ];
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| digest(l)).collect::<Vec<_>>()},
        }))
        .expect("json");
        let config_digest = self.add_blob(&config);
        let layer_digests: Vec<String> = layers.iter().map(|l| self.add_blob(l)).collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layers.iter().zip(&layer_digests).map(|(l, d)| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()
            })).collect::<Vec<_>>(),
        }))
        .expect("json");
        let manifest_digest = self.add_blob(&manifest);
        self.index.retain(|m| m["annotations"][REF_NAME] != tag);
        self.index.push(json!({
            "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(),
            "annotations": {REF_NAME: tag},
        }));
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.index});
        std::fs::write(self.dir.join("index.json"), index.to_string()).expect("index");
    }

    fn source(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }
}

/// (manifest digest, layer digests) of an image, as the registry at `reference` has it.
fn upstream_image(reference: &str, creds: &str) -> (String, Vec<String>) {
    let raw = must_ok(
        "skopeo inspect --raw",
        skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            creds,
            reference,
        ]),
    );
    let start = raw.find('{').expect("json");
    let manifest: Value = serde_json::from_str(raw[start..].trim()).expect("manifest json");
    let layers = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect();
    (inspect_digest(reference, creds), layers)
}

/// The manifest digest `skopeo inspect` reports for `reference` through Arca.
fn inspect_digest(reference: &str, creds: &str) -> String {
    let out = must_ok(
        "skopeo inspect",
        skopeo(&["inspect", "--tls-verify=false", "--creds", creds, reference]),
    );
    let start = out.find('{').expect("json");
    let value: Value = serde_json::from_str(&out[start..]).expect("inspect json");
    value["Digest"].as_str().expect("Digest").to_string()
}

/// Copies `reference` out of Arca into a fresh OCI layout and returns the layout directory.
fn pull(reference: &str, creds: &str, into: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(into);
    must_ok(
        "skopeo copy out of arca",
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            creds,
            reference,
            &format!("oci:{}:pulled", into.display()),
        ]),
    );
    into.to_path_buf()
}

fn has_blob(layout: &Path, digest: &str) -> bool {
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    std::fs::read(layout.join("blobs/sha256").join(hex)).is_ok_and(|data| sha256_hex(&data) == hex)
}

#[test]
fn skopeo_pulls_through_a_remote_of_docker_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut upstream = Upstream::start(&dir.path().join("upstream"));
    let mut layout = Layout::new(dir.path().join("layout"));
    layout.add_image("v1", 1);
    let push = |layout: &Layout, tag: &str| {
        must_ok(
            "skopeo copy to the upstream",
            skopeo(&[
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                &format!("{USER}:{PASSWORD}"),
                &layout.source(tag),
                &format!("docker://{}/team/app:{tag}", upstream.host()),
            ]),
        )
    };
    push(&layout, "v1");
    // skopeo compresses the layers on the way up: the upstream's digests are the truth.
    let upstream_creds = format!("{USER}:{PASSWORD}");
    let at_upstream = |tag: &str| format!("docker://{}/team/app:{tag}", upstream.host());
    let (v1, v1_layers) = upstream_image(&at_upstream("v1"), &upstream_creds);

    let server = ArcaProcess::must_start(ProcessOptions::new(ARCA, dir.path().join("arca")));
    let token = server.admin_token_blocking();
    let password_file = dir.path().join("upstream-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).expect("password file");
    let created = must_ok(
        "arca repo create --remote",
        Command::new(ARCA)
            .args([
                "repo",
                "create",
                "hub",
                "--format",
                "oci",
                "--remote",
                &format!("http://{}", upstream.host()),
                "--upstream-username",
                USER,
                "--upstream-password-file",
                password_file.to_str().expect("path"),
                "--metadata-ttl",
                "0",
                "--output",
                "json",
            ])
            .env("ARCA_SERVER", server.base_url())
            .env("ARCA_TOKEN", &token)
            .output()
            .expect("run arca"),
    );
    assert!(
        !created.contains(PASSWORD),
        "the upstream password is never shown"
    );
    let creds = format!(
        "admin:{}",
        arca_chaos::credentials::admin_password(server.data_dir()).expect("admin password")
    );
    let arca = format!("docker://{}/hub/team/app", server.http_addr);

    // Cold: every blob comes from the upstream once.
    let pulled = pull(&format!("{arca}:v1"), &creds, &dir.path().join("cold"));
    for layer in &v1_layers {
        assert!(has_blob(&pulled, layer), "layer {layer} pulled");
    }
    assert_eq!(inspect_digest(&format!("{arca}:v1"), &creds), v1);
    let blob_gets = |upstream: &Upstream, digest: &str| {
        upstream.requests(&format!("GET /v2/team/app/blobs/{digest} "))
    };
    for layer in &v1_layers {
        assert_eq!(
            blob_gets(&upstream, layer),
            1,
            "one upstream download of {layer}"
        );
    }

    // Warm: the tag is revalidated with HEAD (TTL 0), no blob is downloaded again.
    let heads_before = upstream.requests("HEAD /v2/team/app/manifests/v1 ");
    pull(&format!("{arca}:v1"), &creds, &dir.path().join("warm"));
    for layer in &v1_layers {
        assert_eq!(
            blob_gets(&upstream, layer),
            1,
            "no second download of {layer}"
        );
    }
    assert!(upstream.requests("HEAD /v2/team/app/manifests/v1 ") > heads_before);

    // A version pushed upstream later is there when asked for.
    layout.add_image("v2", 2);
    push(&layout, "v2");
    let (v2, _) = upstream_image(&at_upstream("v2"), &upstream_creds);
    assert_eq!(inspect_digest(&format!("{arca}:v2"), &creds), v2);

    // A moved tag is seen on revalidation.
    layout.add_image("v1", 3);
    push(&layout, "v1");
    let (v1_moved, _) = upstream_image(&at_upstream("v1"), &upstream_creds);
    assert_ne!(v1_moved, v1);
    assert_eq!(inspect_digest(&format!("{arca}:v1"), &creds), v1_moved);
    pull(&format!("{arca}:v1"), &creds, &dir.path().join("moved"));

    // The upstream stops: what the cache holds still pulls, by tag and by digest.
    upstream.stop();
    let offline = pull(&format!("{arca}:v1"), &creds, &dir.path().join("offline"));
    assert!(offline.join("index.json").exists());
    pull(
        &format!("{arca}@{v1}"),
        &creds,
        &dir.path().join("offline-digest"),
    );
    let missing = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("{arca}:never-cached"),
    ]);
    assert!(
        !missing.status.success(),
        "an uncached tag needs the upstream"
    );

    // Nobody pushes into a remote repository.
    let pushed = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &layout.source("v2"),
        &format!("{arca}:pushed"),
    ]);
    assert!(
        !pushed.status.success(),
        "a push into a remote repository is refused"
    );

    let shown = must_ok(
        "arca repo show",
        Command::new(ARCA)
            .args(["repo", "show", "hub", "--output", "json"])
            .env("ARCA_SERVER", server.base_url())
            .env("ARCA_TOKEN", &token)
            .output()
            .expect("run arca"),
    );
    let shown: Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["kind"], "remote");
    assert_eq!(shown["remote"]["username"], USER);
    assert!(shown["logical_bytes"]
        .as_u64()
        .is_some_and(|bytes| bytes > 600_000));

    let arca_cli = |args: &[&str]| {
        must_ok(
            &format!("arca {args:?}"),
            Command::new(ARCA)
                .args(args)
                .env("ARCA_SERVER", server.base_url())
                .env("ARCA_TOKEN", &token)
                .output()
                .expect("run arca"),
        )
    };
    let listed: Value =
        serde_json::from_str(&arca_cli(&["cache", "ls", "--output", "json"])).expect("json");
    assert_eq!(listed["remotes"][0]["name"], "hub");
    let purged: Value = serde_json::from_str(&arca_cli(&[
        "cache",
        "purge",
        "hub/team/app",
        "--output",
        "json",
    ]))
    .expect("json");
    assert!(
        purged["removed"].as_u64().is_some_and(|n| n >= 2),
        "{purged}"
    );
    // Purged, with the upstream down: the tag is gone.
    let gone = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--creds",
        &creds,
        &format!("{arca}:v1"),
    ]);
    assert!(!gone.status.success(), "a purged tag needs the upstream");
}
