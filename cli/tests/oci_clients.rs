//! Real OCI clients against the real binary.
//!
//! - skopeo copies a multi-layer image and a multi-platform index from an OCI layout this test
//!   builds into Arca, inspects them, lists tags, copies them back out (every digest must
//!   match) and deletes them.
//! - buildah (daemonless, `vfs` storage in a temporary directory) builds an image, pushes it as
//!   Docker schema 2 and as OCI, pulls it back and reads the file it put in it.
//! - In a region of three nodes, an image skopeo pushes through one node is pulled, digest for
//!   digest, from every node.
//!
//! Both are Debian packages that `scripts/setup.sh` installs (so `.ci/run` has them); without
//! them these tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arca_chaos::content::sha256_hex;
use arca_chaos::oci::digest;
use arca_chaos::{ArcaProcess, ProcessOptions, Region, RegionOptions};
use serde_json::{json, Value};

const ARCA: &str = env!("CARGO_BIN_EXE_arca");
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn random_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed, 0x0c])
        .finalize_xof()
        .fill(&mut out);
    out
}

fn must_run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}); install it (scripts/setup.sh installs it)")
        });
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn skopeo(args: &[&str]) -> Output {
    let mut all = vec!["--insecure-policy"];
    all.extend(args);
    Command::new("skopeo")
        .args(&all)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run skopeo ({e}); install it (scripts/setup.sh installs it)")
        })
}

fn must_skopeo(args: &[&str]) -> String {
    let output = skopeo(args);
    assert!(
        output.status.success(),
        "skopeo {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// An OCI image layout directory under construction.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write");
        Self { dir }
    }

    fn add_blob(&self, data: &[u8]) -> String {
        std::fs::write(self.dir.join("blobs/sha256").join(sha256_hex(data)), data)
            .expect("write blob");
        digest(data)
    }

    fn blob(dir: &Path, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let data = std::fs::read(dir.join("blobs/sha256").join(hex))
            .unwrap_or_else(|e| panic!("blob {digest} in {}: {e}", dir.display()));
        assert_eq!(sha256_hex(&data), hex, "blob {digest} holds other bytes");
        data
    }

    fn write_index(&self, manifests: Vec<Value>) {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index).expect("json"),
        )
        .expect("write index");
    }

    fn as_str(&self) -> &str {
        self.dir.to_str().expect("utf-8 path")
    }
}

/// A gzipped tar of `files` random files; returns (gzip bytes, diff id of the tar).
fn make_layer(work: &Path, seed: u8, files: usize) -> (Vec<u8>, String) {
    let source = work.join(format!("layer-{seed}"));
    std::fs::create_dir_all(&source).expect("mkdir");
    for i in 0..files {
        let data = random_bytes(
            150_000 + i * 40_000,
            seed.wrapping_mul(31).wrapping_add(i as u8),
        );
        std::fs::write(source.join(format!("file-{i}.bin")), data).expect("write");
    }
    let tar = work.join(format!("layer-{seed}.tar"));
    must_run(
        "tar",
        &[
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-cf",
            tar.to_str().expect("path"),
            "-C",
            source.to_str().expect("path"),
            ".",
        ],
    );
    let diff_id = digest(&std::fs::read(&tar).expect("read tar"));
    let gzipped = must_run("gzip", &["-n", "-c", tar.to_str().expect("path")]).stdout;
    (gzipped, diff_id)
}

/// Adds an image of `layers` for `arch` to the layout; returns the manifest bytes.
fn make_image(layout: &Layout, arch: &str, layers: &[&(Vec<u8>, String)]) -> Vec<u8> {
    let config = serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(_, id)| id).collect::<Vec<_>>()},
        "history": layers.iter().map(|_| json!({"created_by": "arca test"})).collect::<Vec<_>>(),
    }))
    .expect("json");
    let config_digest = layout.add_blob(&config);
    let mut layer_descriptors = Vec::new();
    for (data, _) in layers {
        let layer_digest = layout.add_blob(data);
        layer_descriptors
            .push(json!({"mediaType": OCI_LAYER, "digest": layer_digest, "size": data.len()}));
    }
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layer_descriptors,
    }))
    .expect("json");
    layout.add_blob(&manifest);
    manifest
}

/// Every digest an image or index references, recursively, from a layout.
fn referenced(dir: &Path, manifest_digest: &str, out: &mut Vec<String>) {
    out.push(manifest_digest.to_string());
    let manifest: Value =
        serde_json::from_slice(&Layout::blob(dir, manifest_digest)).expect("json");
    if let Some(children) = manifest["manifests"].as_array() {
        for child in children {
            referenced(dir, child["digest"].as_str().expect("digest"), out);
        }
    }
    if let Some(config) = manifest["config"]["digest"].as_str() {
        out.push(config.to_string());
    }
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        out.push(layer["digest"].as_str().expect("digest").to_string());
    }
}

/// The manifest digest an OCI layout's index.json names `tag`.
fn tagged(dir: &Path, tag: &str) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index.json"))
            .expect("json");
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"][REF_NAME] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))["digest"]
        .as_str()
        .expect("digest")
        .to_string()
}

/// A two-platform index (amd64, arm64 v8) over two images that share `shared`, each with a
/// layer of its own (made with the seeds), added to `layout`: (index, amd64, arm64).
fn two_platform_index(
    layout: &Layout,
    work: &Path,
    shared: &(Vec<u8>, String),
    (seed_amd64, seed_arm64): (u8, u8),
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let amd64 = make_image(layout, "amd64", &[shared, &make_layer(work, seed_amd64, 1)]);
    let arm64 = make_image(layout, "arm64", &[shared, &make_layer(work, seed_arm64, 2)]);
    let index = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": digest(&amd64), "size": amd64.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": digest(&arm64), "size": arm64.len(),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    }))
    .expect("json");
    layout.add_blob(&index);
    (index, amd64, arm64)
}

/// A node with an `oci` repository named `containers`.
fn registry(dir: &Path) -> ArcaProcess {
    let mut options = ProcessOptions::new(ARCA, dir.join("data"));
    // Small chunks so that layers of a few hundred kilobytes have several.
    options.env = vec![
        ("ARCA_CHUNKING__MIN_SIZE".into(), "16384".into()),
        ("ARCA_CHUNKING__AVG_SIZE".into(), "65536".into()),
        ("ARCA_CHUNKING__MAX_SIZE".into(), "262144".into()),
    ];
    let server = ArcaProcess::must_start(options);
    let created = Command::new(ARCA)
        .args([
            "repo",
            "create",
            "containers",
            "--format",
            "oci",
            "--output",
            "json",
        ])
        .env("ARCA_SERVER", server.base_url())
        .env("ARCA_TOKEN", server.admin_token_blocking())
        .output()
        .expect("run arca");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    // skopeo and buildah sign in as the bootstrap account through the registry token flow.
    sign_in(
        dir,
        &server.http_addr.to_string(),
        "admin",
        &admin_password(&server),
    );
    server
}

fn admin_password(server: &ArcaProcess) -> String {
    arca_chaos::credentials::admin_password(server.data_dir()).expect("initial-admin-password")
}

/// `skopeo login` into this test's auth file, which every later skopeo and buildah command of
/// this test process reads (`REGISTRY_AUTH_FILE`; each test runs in its own process).
fn sign_in(dir: &Path, host: &str, user: &str, password: &str) {
    let auth_file = dir.join("auth.json");
    // SAFETY-free: edition 2021, and each test is its own process under nextest.
    std::env::set_var("REGISTRY_AUTH_FILE", &auth_file);
    must_skopeo(&[
        "login",
        "--tls-verify=false",
        "-u",
        user,
        "-p",
        password,
        host,
    ]);
}

/// The Python interpreter of the test clients' virtualenv (`scripts/setup.sh` makes it).
fn test_python() -> String {
    std::env::var("ARCA_TEST_PYTHON").unwrap_or_else(|_| {
        let tools = std::env::var("ARCA_TOOLS_DIR").unwrap_or_else(|_| {
            format!(
                "{}/.cache/arca-tools",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        format!("{tools}/py/bin/python")
    })
}

/// oras (its Python SDK, 0.2.43) against a private repository: it pushes with Basic
/// credentials on every request (its `basic` backend: its token backend keeps the first,
/// pull-only token it got and retries a push with it), pulls back through the registry token
/// flow after `login`, and without credentials is refused.
#[test]
fn oras_pushes_an_artifact_and_pulls_it_back_through_the_token_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = registry(dir.path());
    let host = server.http_addr.to_string();
    let artifact = dir.path().join("artifact.bin");
    let payload = random_bytes(300_000, 21);
    std::fs::write(&artifact, &payload).expect("write");
    let script = dir.path().join("oras_client.py");
    std::fs::write(
        &script,
        r#"import os, sys, oras.client
host, user, password, path, out, mode = sys.argv[1:7]
target = f"{host}/containers/oras/artifact:v1"
os.chdir(os.path.dirname(path))
if mode == "push":
    client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
    client.login(username=user, password=password, hostname=host)
    client.push(files=[os.path.basename(path)], target=target)
elif mode == "pull":
    client = oras.client.OrasClient(hostname=host, insecure=True)
    client.login(username=user, password=password, hostname=host)
    print(client.pull(target=target, outdir=out))
else:
    client = oras.client.OrasClient(hostname=host, insecure=True)
    client.push(files=[os.path.basename(path)], target=f"{host}/containers/oras/anonymous:v1")
"#,
    )
    .expect("write the script");
    let python = test_python();
    let out = dir.path().join("out");
    let run = |mode: &str| {
        Command::new(&python)
            .arg(&script)
            .args([&host, "admin", &admin_password(&server)])
            .arg(&artifact)
            .arg(&out)
            .arg(mode)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {python} ({e}); scripts/setup.sh installs the oras SDK")
            })
    };
    for mode in ["push", "pull"] {
        let output = run(mode);
        assert!(
            output.status.success(),
            "oras {mode}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(
        std::fs::read(out.join("artifact.bin")).expect("pulled"),
        payload
    );
    let anonymous = run("anonymous");
    assert!(!anonymous.status.success(), "an anonymous push is refused");
    // Nothing was stored: the image has no tags (or is unknown altogether).
    let listed = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{host}/containers/oras/anonymous"),
    ]);
    let tags: Value = serde_json::from_slice(&listed.stdout).unwrap_or(Value::Null);
    assert!(
        tags["Tags"].as_array().is_none_or(|t| t.is_empty()),
        "nothing was stored: {tags}"
    );
}

#[test]
fn skopeo_copies_inspects_lists_and_deletes_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = registry(dir.path());
    let host = server.http_addr.to_string();

    // The source: an OCI layout with a three-layer image tagged 1.4 and a two-platform index
    // tagged multi whose images share a layer with it.
    let work = dir.path().join("work");
    let layout = Layout::new(dir.path().join("layout"));
    let shared = make_layer(&work, 1, 3);
    let second = make_layer(&work, 2, 2);
    let third = make_layer(&work, 3, 1);
    let image = make_image(&layout, "amd64", &[&shared, &second, &third]);
    let (index, _, _) = two_platform_index(&layout, &work, &shared, (4, 5));
    layout.write_index(vec![
        json!({"mediaType": OCI_MANIFEST, "digest": digest(&image), "size": image.len(),
               "annotations": {REF_NAME: "1.4"}}),
        json!({"mediaType": OCI_INDEX, "digest": digest(&index), "size": index.len(),
               "annotations": {REF_NAME: "multi"}}),
    ]);

    let app = format!("docker://{host}/containers/team/app");
    let multi = format!("docker://{host}/containers/team/multi");
    must_skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:1.4", layout.as_str()),
        &format!("{app}:1.4"),
    ]);
    must_skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.as_str()),
        &format!("{multi}:2.0"),
    ]);
    // Retagging inside the registry: skopeo finds every blob already there.
    must_skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("{app}:1.4"),
        &format!("{app}:latest"),
    ]);

    // Inspect: what skopeo sees is what the layout holds, byte for byte.
    let inspected: Value = serde_json::from_str(&must_skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("{app}:1.4"),
    ]))
    .expect("json");
    assert_eq!(inspected["Digest"], digest(&image));
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(
        inspected["Layers"],
        json!([digest(&shared.0), digest(&second.0), digest(&third.0)])
    );
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("{app}:1.4"),
    ]);
    assert!(raw.status.success());
    assert_eq!(
        raw.stdout, image,
        "the registry serves the exact manifest bytes"
    );
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("{multi}:2.0"),
    ]);
    assert!(raw.status.success());
    assert_eq!(raw.stdout, index);
    let arm: Value = serde_json::from_str(&must_skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--override-arch=arm64",
        "--override-variant=v8",
        &format!("{multi}:2.0"),
    ]))
    .expect("json");
    // skopeo reports the digest of what the tag names (the index) and the chosen image's config.
    assert_eq!(arm["Digest"], digest(&index));
    assert_eq!(arm["Architecture"], "arm64");
    assert_eq!(arm["Layers"][0], digest(&shared.0));

    let tags: Value =
        serde_json::from_str(&must_skopeo(&["list-tags", "--tls-verify=false", &app]))
            .expect("json");
    assert_eq!(tags["Tags"], json!(["1.4", "latest"]));

    // Copy back out and compare every digest.
    let out = dir.path().join("out");
    must_skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("{app}:1.4"),
        &format!("oci:{}:1.4", out.to_str().expect("path")),
    ]);
    must_skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("{multi}:2.0"),
        &format!("oci:{}:multi", out.to_str().expect("path")),
    ]);
    for tag in ["1.4", "multi"] {
        let source = tagged(&layout.dir, tag);
        let copied = tagged(&out, tag);
        assert_eq!(copied, source, "{tag} came back with the same digest");
        let mut expected = Vec::new();
        referenced(&layout.dir, &source, &mut expected);
        let mut got = Vec::new();
        referenced(&out, &copied, &mut got);
        assert_eq!(
            got, expected,
            "{tag}: every manifest, config and layer digest matches"
        );
        assert!(expected.len() >= 5);
    }

    // The shared layer is stored once: the repository's physical bytes are less than the sum
    // of what was pushed.
    let repo: Value = serde_json::from_slice(
        &Command::new(ARCA)
            .args(["repo", "show", "containers", "--output", "json"])
            .env("ARCA_SERVER", server.base_url())
            .env("ARCA_TOKEN", server.admin_token_blocking())
            .output()
            .expect("run arca")
            .stdout,
    )
    .expect("json");
    let logical = repo["logical_bytes"].as_u64().expect("logical");
    let physical = repo["physical_bytes"].as_u64().expect("physical");
    assert!(
        physical < logical,
        "dedup: {physical} physical of {logical} logical"
    );

    // Delete: skopeo deletes by digest, which removes both tags of the image.
    must_skopeo(&["delete", "--tls-verify=false", &format!("{app}:1.4")]);
    let gone = skopeo(&["inspect", "--tls-verify=false", &format!("{app}:latest")]);
    assert!(!gone.status.success(), "the manifest is gone");
    let tags: Value =
        serde_json::from_str(&must_skopeo(&["list-tags", "--tls-verify=false", &app]))
            .expect("json");
    assert_eq!(tags["Tags"], json!([]));
    must_skopeo(&["delete", "--tls-verify=false", &format!("{multi}:2.0")]);
    let gone = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("{multi}:2.0"),
    ]);
    assert!(!gone.status.success());
}

/// buildah with its storage (vfs: no overlay mounts, no daemon) in `dir`.
struct Buildah {
    root: PathBuf,
    runroot: PathBuf,
}

impl Buildah {
    fn new(dir: &Path) -> Self {
        Self {
            root: dir.join("buildah-root"),
            runroot: dir.join("buildah-run"),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let mut all = vec![
            "--root",
            self.root.to_str().expect("path"),
            "--runroot",
            self.runroot.to_str().expect("path"),
            "--storage-driver",
            "vfs",
        ];
        all.extend(args);
        let output = must_run("buildah", &all);
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    }
}

#[test]
fn buildah_builds_pushes_and_pulls_back_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = registry(dir.path());
    let host = server.http_addr.to_string();
    let buildah = Buildah::new(dir.path());
    let payload = random_bytes(400_000, 9);
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, &payload).expect("write");

    let container = buildah.run(&["from", "scratch"]);
    buildah.run(&[
        "copy",
        &container,
        file.to_str().expect("path"),
        "/payload.bin",
    ]);
    buildah.run(&["config", "--entrypoint", r#"["/payload.bin"]"#, &container]);
    let mut pushed = Vec::new();
    for (format, tag, media_type) in [
        (
            "docker",
            "v1",
            "application/vnd.docker.distribution.manifest.v2+json",
        ),
        ("oci", "v1-oci", OCI_MANIFEST),
    ] {
        let reference = format!("{host}/containers/built/app:{tag}");
        buildah.run(&["commit", "--format", format, &container, &reference]);
        let digest_file = dir.path().join(format!("{tag}.digest"));
        buildah.run(&[
            "push",
            "--tls-verify=false",
            "--digestfile",
            digest_file.to_str().expect("path"),
            &reference,
        ]);
        let pushed_digest = std::fs::read_to_string(&digest_file).expect("digest file");
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ]);
        assert!(raw.status.success());
        assert_eq!(digest(&raw.stdout), pushed_digest.trim(), "{format}");
        let manifest: Value = serde_json::from_slice(&raw.stdout).expect("json");
        assert_eq!(manifest["mediaType"], media_type, "{format}");
        pushed.push(reference);
    }

    // Forget everything locally, pull both back, and read the file out of the image.
    buildah.run(&["rm", "--all"]);
    buildah.run(&["rmi", "--all", "--force"]);
    for reference in &pushed {
        buildah.run(&["pull", "--tls-verify=false", reference]);
        let container = buildah.run(&["from", reference]);
        let mountpoint = buildah.run(&["mount", &container]);
        let pulled = std::fs::read(Path::new(&mountpoint).join("payload.bin")).expect("payload");
        assert!(pulled == payload, "{reference}: the file came back intact");
        buildah.run(&["umount", &container]);
        buildah.run(&["rm", &container]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pushed_through_one_node_is_pulled_from_every_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = RegionOptions::new(ARCA, dir.path(), 3);
    options.env = vec![
        ("ARCA_CHUNKING__MIN_SIZE".into(), "16384".into()),
        ("ARCA_CHUNKING__AVG_SIZE".into(), "65536".into()),
        ("ARCA_CHUNKING__MAX_SIZE".into(), "262144".into()),
    ];
    let region = Region::must_start(options).await;
    let created = region
        .http()
        .post(region.url(1, "/api/v1/repos"))
        .json(&json!({"name": "containers", "format": "oci"}))
        .send()
        .await
        .expect("create repo");
    assert_eq!(created.status(), 201);
    let password = admin_password(region.node(1));
    for node in 1..=3 {
        sign_in(
            dir.path(),
            &region.node(node).http_addr.to_string(),
            "admin",
            &password,
        );
    }

    let work = dir.path().join("work");
    let layout = Layout::new(dir.path().join("layout"));
    let first = make_layer(&work, 6, 2);
    let second = make_layer(&work, 7, 1);
    let image = make_image(&layout, "amd64", &[&first, &second]);
    layout.write_index(vec![
        json!({"mediaType": OCI_MANIFEST, "digest": digest(&image),
        "size": image.len(), "annotations": {REF_NAME: "1.0"}}),
    ]);
    let reference = |node: u64| {
        format!(
            "docker://{}/containers/team/app:1.0",
            region.node(node).http_addr
        )
    };
    // Blob upload sessions are node-local: skopeo keeps to the node it talks to.
    let source = format!("oci:{}:1.0", layout.as_str());
    let destination = reference(2);
    tokio::task::spawn_blocking(move || {
        must_skopeo(&["copy", "--dest-tls-verify=false", &source, &destination])
    })
    .await
    .expect("skopeo");

    for node in 1..=3 {
        let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &reference(node)]);
        assert!(
            raw.status.success(),
            "node {node}: {}",
            String::from_utf8_lossy(&raw.stderr)
        );
        assert_eq!(raw.stdout, image, "node {node} serves the pushed manifest");
        let out = dir.path().join(format!("out-{node}"));
        let source = reference(node);
        let destination = format!("oci:{}:1.0", out.to_str().expect("path"));
        tokio::task::spawn_blocking(move || {
            must_skopeo(&["copy", "--src-tls-verify=false", &source, &destination])
        })
        .await
        .expect("skopeo");
        let mut expected = Vec::new();
        referenced(&layout.dir, &digest(&image), &mut expected);
        let mut got = Vec::new();
        referenced(&out, &tagged(&out, "1.0"), &mut got);
        assert_eq!(got, expected, "node {node}: every digest matches");
    }
}

/// Runs `arca` as the bootstrap account of `server`.
fn must_arca(server: &ArcaProcess, args: &[&str]) -> Value {
    let output = Command::new(ARCA)
        .args(args)
        .args(["--output", "json"])
        .env("ARCA_SERVER", server.base_url())
        .env("ARCA_TOKEN", server.admin_token_blocking())
        .output()
        .expect("run arca");
    assert!(
        output.status.success(),
        "arca {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json")
}

#[test]
fn skopeo_logs_in_and_copies_a_multi_platform_image_into_a_private_repository() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ArcaProcess::must_start(ProcessOptions::new(ARCA, dir.path().join("data")));
    let host = server.http_addr.to_string();
    must_arca(&server, &["repo", "create", "private", "--format", "oci"]);
    must_arca(
        &server,
        &[
            "repo",
            "create",
            "public",
            "--format",
            "oci",
            "--anonymous-read",
        ],
    );
    let alice_password = "alice's long password";
    let created = Command::new(ARCA)
        .args(["user", "create", "alice", "--password-stdin"])
        .env("ARCA_SERVER", server.base_url())
        .env("ARCA_TOKEN", server.admin_token_blocking())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(alice_password.as_bytes())?;
            child.wait_with_output()
        })
        .expect("arca user create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    must_arca(
        &server,
        &["role", "grant", "write", "private", "--user", "alice"],
    );
    must_arca(
        &server,
        &["role", "grant", "write", "public", "--user", "alice"],
    );

    // A two-platform index.
    let work = dir.path().join("work");
    let layout = Layout::new(dir.path().join("layout"));
    let shared = make_layer(&work, 11, 2);
    let (index, _, _) = two_platform_index(&layout, &work, &shared, (12, 13));
    layout.write_index(vec![
        json!({"mediaType": OCI_INDEX, "digest": digest(&index),
        "size": index.len(), "annotations": {REF_NAME: "multi"}}),
    ]);
    let source = format!("oci:{}:multi", layout.as_str());
    let private = format!("docker://{host}/private/team/app:1.0");

    // Without credentials the push is refused, and nothing is stored.
    let anonymous = dir.path().join("anonymous.json");
    std::fs::write(&anonymous, "{}").expect("write");
    let refused = skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--authfile",
        anonymous.to_str().expect("path"),
        &source,
        &private,
    ]);
    assert!(!refused.status.success(), "an anonymous push was accepted");
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .to_lowercase()
            .contains("unauthorized")
            || String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // `skopeo login` (password), then copy: the token endpoint's GET flow.
    let alice_auth = dir.path().join("alice.json");
    let authfile = alice_auth.to_str().expect("path");
    must_skopeo(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        authfile,
        "-u",
        "alice",
        "-p",
        alice_password,
        &host,
    ]);
    must_skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--authfile",
        authfile,
        &source,
        &private,
    ]);
    let raw = must_skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        authfile,
        &private,
    ]);
    assert_eq!(
        digest(raw.as_bytes()),
        digest(&index),
        "the exact index bytes"
    );

    // An anonymous pull of the private repository is refused.
    let refused = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        anonymous.to_str().expect("path"),
        &private,
    ]);
    assert!(
        !refused.status.success(),
        "an anonymous pull of a private repository"
    );

    // `--creds` with an access token as the password (any user name).
    let token = must_arca(
        &server,
        &[
            "token",
            "create",
            "--scope",
            "private:read",
            "--owner",
            "alice",
        ],
    )["token"]
        .as_str()
        .expect("token")
        .to_string();
    let out = dir.path().join("out");
    must_skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        "--src-creds",
        &format!("ci:{token}"),
        &private,
        &format!("oci:{}:pulled", out.display()),
    ]);
    // The token is read-only: pushing with it is refused.
    let refused = skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--dest-creds",
        &format!("ci:{token}"),
        &source,
        &format!("docker://{host}/private/team/app:2.0"),
    ]);
    assert!(!refused.status.success(), "a read-only token pushed");

    // `docker login` stores the refresh token the endpoint returns (identitytoken); skopeo
    // then takes tokens with the POST refresh_token grant.
    let docker_config = dir.path().join("docker");
    let mut login = Command::new("docker")
        .env("DOCKER_CONFIG", &docker_config)
        .args(["login", &host, "-u", "alice", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker (the CLI; it logs in without a daemon)");
    {
        use std::io::Write;
        login
            .stdin
            .take()
            .expect("stdin")
            .write_all(alice_password.as_bytes())
            .expect("write");
    }
    let login = login.wait_with_output().expect("docker login");
    assert!(
        login.status.success(),
        "docker login: {}",
        String::from_utf8_lossy(&login.stderr)
    );
    let config: Value = serde_json::from_slice(
        &std::fs::read(docker_config.join("config.json")).expect("docker config"),
    )
    .expect("json");
    assert!(
        config["auths"][&host]["identitytoken"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "docker login kept a refresh token: {config}"
    );
    let via_refresh = must_skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        docker_config.join("config.json").to_str().expect("path"),
        &private,
    ]);
    assert_eq!(digest(via_refresh.as_bytes()), digest(&index));

    // A public repository: alice pushes, anyone pulls.
    let public = format!("docker://{host}/public/team/app:1.0");
    must_skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--authfile",
        authfile,
        &source,
        &public,
    ]);
    let raw = must_skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        anonymous.to_str().expect("path"),
        &public,
    ]);
    assert_eq!(digest(raw.as_bytes()), digest(&index));
}
