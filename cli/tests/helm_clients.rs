//! The real helm (3.17.3, the static binary `scripts/setup.sh` takes from the npm registry)
//! against the real binary, each run with its own helm homes: a chart made with `helm create`
//! and `helm package`, uploaded with chartmuseum's API, then `helm repo add` with credentials,
//! `helm repo update`, `helm search repo`, `helm pull` (the archive byte for byte) and `helm
//! show chart`; and the same chart as an OCI artifact in an `oci` repository: `helm registry
//! login`, `helm push oci://…`, `helm pull oci://… --version '^0.1'` resolving the version from
//! the tag list, and a version with build metadata tagged with `_` for `+`. A mirror region serves the classic repository read-only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use arca_chaos::{ArcaProcess, ProcessOptions, Region};

mod clients;

use clients::{
    access_token, block_on, create_repo, must_ok, poll_until, region_options, text_of, ARCA,
};

/// The helm binary `scripts/setup.sh` installs.
fn helm_binary() -> PathBuf {
    let tools = std::env::var_os("ARCA_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/arca-tools")
        });
    let helm = tools.join("helm/helm");
    assert!(
        helm.exists(),
        "helm is not installed at {} (scripts/setup.sh installs it)",
        helm.display()
    );
    helm
}

/// One helm user: its own config, cache and data homes.
struct HelmUser {
    home: PathBuf,
    binary: PathBuf,
}

impl HelmUser {
    fn new(dir: &Path) -> Self {
        let home = dir.join("helm-home");
        std::fs::create_dir_all(&home).expect("helm home");
        Self {
            home,
            binary: helm_binary(),
        }
    }

    fn helm(&self, dir: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new(&self.binary);
        command
            .current_dir(dir)
            .args(args)
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .env("HELM_REGISTRY_CONFIG", self.home.join("registry.json"))
            .env(
                "HELM_REPOSITORY_CONFIG",
                self.home.join("repositories.yaml"),
            )
            .env("HELM_REPOSITORY_CACHE", self.home.join("repository"));
        match stdin {
            None => command.output().expect("run helm"),
            Some(input) => {
                use std::io::Write as _;
                command
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                let mut child = command.spawn().expect("run helm");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(input.as_bytes())
                    .expect("stdin");
                child.wait_with_output().expect("helm")
            }
        }
    }

    /// `helm create NAME` and `helm package` at `version`: the archive's path.
    fn package(&self, dir: &Path, name: &str, version: &str) -> PathBuf {
        let work = dir.join(format!("src-{name}-{version}"));
        std::fs::create_dir_all(&work).expect("work dir");
        must_ok("helm create", self.helm(&work, &["create", name], None));
        must_ok(
            "helm package",
            self.helm(&work, &["package", name, "--version", version], None),
        );
        work.join(format!("{name}-{version}.tgz"))
    }
}

/// Uploads an archive with chartmuseum's API.
fn upload(repository: &str, token: &str, archive: &Path) -> u16 {
    let bytes = std::fs::read(archive).expect("archive");
    block_on(async {
        reqwest::Client::new()
            .post(format!("{repository}/api/charts"))
            .basic_auth("ci", Some(token))
            .body(bytes)
            .send()
            .await
            .expect("upload")
            .status()
            .as_u16()
    })
}

#[test]
fn helm_reads_a_classic_repository_and_pushes_and_pulls_charts_over_oci() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ArcaProcess::must_start(ProcessOptions::new(ARCA, dir.path().join("data")));
    let base = server.base_url();
    let host = base.trim_start_matches("http://").to_string();
    let session = server.admin_token_blocking();
    create_repo(&base, &session, "charts", "helm");
    create_repo(&base, &session, "oci", "oci");
    let token = access_token(&base, &session, &["charts:write", "oci:write"]);
    let user = HelmUser::new(dir.path());
    let work = dir.path();

    let archive = user.package(work, "web", "0.1.0");
    let repository = format!("{base}/helm/charts");
    assert_eq!(upload(&repository, &token, &archive), 201);
    assert_eq!(
        upload(&repository, &token, &archive),
        200,
        "a retry succeeds"
    );
    let newer = user.package(work, "web", "0.2.0");
    assert_eq!(upload(&repository, &token, &newer), 201);

    // Without credentials helm is refused; with them it reads the index.
    let refused = user.helm(work, &["repo", "add", "anon", &repository], None);
    assert!(!refused.status.success(), "{}", text_of(&refused));
    must_ok(
        "helm repo add",
        user.helm(
            work,
            &[
                "repo",
                "add",
                "arca",
                &repository,
                "--username",
                "ci",
                "--password",
                &token,
            ],
            None,
        ),
    );
    must_ok(
        "helm repo update",
        user.helm(work, &["repo", "update"], None),
    );
    let found = must_ok(
        "helm search repo",
        user.helm(work, &["search", "repo", "arca/web", "--versions"], None),
    );
    assert!(
        found.contains("0.2.0") && found.contains("0.1.0"),
        "{found}"
    );
    let pulled = work.join("pulled");
    std::fs::create_dir_all(&pulled).expect("pulled");
    must_ok(
        "helm pull",
        user.helm(
            work,
            &[
                "pull",
                "arca/web",
                "--version",
                "0.1.0",
                "-d",
                &pulled.to_string_lossy(),
            ],
            None,
        ),
    );
    assert_eq!(
        std::fs::read(pulled.join("web-0.1.0.tgz")).expect("pulled archive"),
        std::fs::read(&archive).expect("archive"),
        "byte for byte"
    );
    let shown = must_ok(
        "helm show chart",
        user.helm(work, &["show", "chart", "arca/web"], None),
    );
    assert!(
        shown.contains("name: web") && shown.contains("version: 0.2.0"),
        "{shown}"
    );

    // The same charts as OCI artifacts.
    must_ok(
        "helm registry login",
        user.helm(
            work,
            &[
                "registry",
                "login",
                &host,
                "-u",
                "ci",
                "--password-stdin",
                "--insecure",
            ],
            Some(&token),
        ),
    );
    for chart in [&archive, &newer] {
        must_ok(
            "helm push",
            user.helm(
                work,
                &[
                    "push",
                    &chart.to_string_lossy(),
                    &format!("oci://{host}/oci/charts"),
                    "--plain-http",
                ],
                None,
            ),
        );
    }
    let from_oci = work.join("from-oci");
    std::fs::create_dir_all(&from_oci).expect("dir");
    must_ok(
        "helm pull oci",
        user.helm(
            work,
            &[
                "pull",
                &format!("oci://{host}/oci/charts/web"),
                "--version",
                "^0.1",
                "--plain-http",
                "-d",
                &from_oci.to_string_lossy(),
            ],
            None,
        ),
    );
    assert_eq!(
        std::fs::read(from_oci.join("web-0.1.0.tgz")).expect("pulled over oci"),
        std::fs::read(&archive).expect("archive"),
        "the highest 0.1 version, byte for byte"
    );
    let shown = must_ok(
        "helm show chart oci",
        user.helm(
            work,
            &[
                "show",
                "chart",
                &format!("oci://{host}/oci/charts/web"),
                "--version",
                "0.2.0",
                "--plain-http",
            ],
            None,
        ),
    );
    assert!(shown.contains("version: 0.2.0"), "{shown}");

    // A version with build metadata: helm tags it with `_` for `+` (tags cannot hold `+`) and
    // maps it back when it lists the tags.
    let built = user.package(work, "web", "0.3.0+build.1");
    must_ok(
        "helm push (build metadata)",
        user.helm(
            work,
            &[
                "push",
                &built.to_string_lossy(),
                &format!("oci://{host}/oci/charts"),
                "--plain-http",
            ],
            None,
        ),
    );
    let tags: serde_json::Value = block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/v2/oci/charts/web/tags/list"))
            .basic_auth("ci", Some(&token))
            .send()
            .await
            .expect("tags")
            .json()
            .await
            .expect("json")
    });
    assert!(
        tags["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "0.3.0_build.1")),
        "{tags}"
    );
    let built_dir = work.join("from-oci-built");
    std::fs::create_dir_all(&built_dir).expect("dir");
    must_ok(
        "helm pull oci (build metadata)",
        user.helm(
            work,
            &[
                "pull",
                &format!("oci://{host}/oci/charts/web"),
                "--version",
                "0.3.0+build.1",
                "--plain-http",
                "-d",
                &built_dir.to_string_lossy(),
            ],
            None,
        ),
    );
    assert_eq!(
        std::fs::read(built_dir.join("web-0.3.0+build.1.tgz")).expect("pulled"),
        std::fs::read(&built).expect("archive")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serves_a_classic_repository_read_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = Region::must_start(region_options(root.path(), "us", 1, Vec::new())).await;
    let eu = Region::must_start(region_options(root.path(), "eu", 1, us.replication_addrs())).await;
    let session = us.token.clone().expect("the primary's admin token");
    let (primary, mirror) = (us.node(1).base_url(), eu.node(1).base_url());
    let dir = root.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        create_repo(&primary, &session, "charts", "helm");
        let token = access_token(&primary, &session, &["charts:write"]);
        let user = HelmUser::new(&dir);
        let archive = user.package(&dir, "web", "1.0.0");
        assert_eq!(
            upload(&format!("{primary}/helm/charts"), &token, &archive),
            201
        );
        let at_mirror = format!("{mirror}/helm/charts");
        let replicated = poll_until(Duration::from_secs(30), || {
            block_on(async {
                let response = reqwest::Client::new()
                    .get(format!("{at_mirror}/charts/web-1.0.0.tgz"))
                    .basic_auth("ci", Some(&token))
                    .send()
                    .await;
                matches!(response, Ok(r) if r.status() == 200)
            })
        });
        assert!(replicated, "the mirror never served the chart");
        must_ok(
            "helm repo add (mirror)",
            user.helm(
                &dir,
                &[
                    "repo",
                    "add",
                    "eu",
                    &at_mirror,
                    "--username",
                    "ci",
                    "--password",
                    &token,
                ],
                None,
            ),
        );
        let shown = must_ok(
            "helm show chart (mirror)",
            user.helm(&dir, &["show", "chart", "eu/web"], None),
        );
        assert!(shown.contains("version: 1.0.0"), "{shown}");
        let newer = user.package(&dir, "web", "1.0.1");
        let bytes = std::fs::read(&newer).expect("archive");
        let (status, body) = block_on(async {
            let response = reqwest::Client::new()
                .post(format!("{at_mirror}/api/charts"))
                .basic_auth("ci", Some(&token))
                .body(bytes)
                .send()
                .await
                .expect("upload");
            (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            )
        });
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("read-only mirror"), "{body}");
    })
    .await
    .expect("mirror");
}
