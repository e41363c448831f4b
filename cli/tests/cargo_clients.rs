//! The real cargo (the machine's toolchain, 1.95) against the real binary, each run with a
//! `CARGO_HOME` of its own pointing an alternative registry `arca` at
//! `sparse+http://…/cargo/rs/index/`: `cargo login`, `cargo publish` (cargo waits until the
//! index lists the version), a republish with other bytes refused, `cargo yank` and `--undo`
//! changing what a fresh resolution picks, `cargo search`, `cargo owner --list`, and dependent
//! crates that build from Arca. The registry is private, so cargo reads `config.json`, is
//! challenged with `Cargo login_url`, and sends its token on every request after that. In a
//! region of three nodes a build through another node resolves a publish at once, and a mirror
//! region serves it and refuses a publish with a message cargo prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use arca_chaos::{ArcaProcess, ProcessOptions, Region};

mod clients;

use clients::{access_token, create_repo, must_ok, poll_until, region_options, text_of, ARCA};

/// One cargo user: a `CARGO_HOME` whose registry `arca` is `index`, and a target directory
/// of its own.
struct CargoUser {
    home: PathBuf,
}

impl CargoUser {
    fn new(dir: &Path, index: &str) -> Self {
        let home = dir.join("cargo-home");
        std::fs::create_dir_all(&home).expect("cargo home");
        std::fs::write(
            home.join("config.toml"),
            format!(
                "[registries.arca]\nindex = \"sparse+{index}\"\n\n[registry]\nglobal-credential-providers = [\"cargo:token\"]\n"
            ),
        )
        .expect("config.toml");
        Self { home }
    }

    /// `cargo ARGS…` in `dir`; `token`, when given, as `CARGO_REGISTRIES_ARCA_TOKEN`.
    fn cargo(&self, dir: &Path, args: &[&str], token: Option<&str>, stdin: Option<&str>) -> Output {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .current_dir(dir)
            .args(args)
            .env("CARGO_HOME", &self.home)
            .env("CARGO_TARGET_DIR", self.home.join("target"))
            .env("CARGO_TERM_COLOR", "never")
            .env("CARGO_NET_RETRY", "0")
            .env_remove("CARGO_REGISTRIES_ARCA_TOKEN")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("CARGO_BUILD_TARGET_DIR");
        if let Some(token) = token {
            command.env("CARGO_REGISTRIES_ARCA_TOKEN", token);
        }
        match stdin {
            None => command.output().expect("run cargo"),
            Some(input) => {
                use std::io::Write as _;
                command
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                let mut child = command.spawn().expect("run cargo");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(input.as_bytes())
                    .expect("write stdin");
                child.wait_with_output().expect("cargo")
            }
        }
    }
}

/// The library `arca-hello-lib` at `version`, whose `greet()` returns `greeting`.
fn library(dir: &Path, version: &str, greeting: &str) -> PathBuf {
    let path = dir.join(format!("lib-{version}-{greeting}"));
    std::fs::create_dir_all(path.join("src")).expect("src");
    std::fs::write(
        path.join("Cargo.toml"),
        format!(
            "[package]\nname = \"arca-hello-lib\"\nversion = \"{version}\"\nedition = \"2021\"\ndescription = \"says hello\"\nlicense = \"MIT\"\npublish = [\"arca\"]\n\n[workspace]\n"
        ),
    )
    .expect("Cargo.toml");
    std::fs::write(
        path.join("src/lib.rs"),
        format!("pub fn greet() -> &'static str {{ \"{greeting}\" }}\n"),
    )
    .expect("lib.rs");
    path
}

/// A binary depending on `arca-hello-lib` `requirement` from the registry (renamed: the
/// index's `package` field), printing its greeting.
fn app(dir: &Path, label: &str, requirement: &str) -> PathBuf {
    let path = dir.join(label);
    std::fs::create_dir_all(path.join("src")).expect("src");
    std::fs::write(
        path.join("Cargo.toml"),
        format!(
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\nhello = {{ package = \"arca-hello-lib\", version = \"{requirement}\", registry = \"arca\" }}\n\n[workspace]\n"
        ),
    )
    .expect("Cargo.toml");
    std::fs::write(
        path.join("src/main.rs"),
        "fn main() { println!(\"greeting={}\", hello::greet()); }\n",
    )
    .expect("main.rs");
    path
}

/// Runs a fresh app (no lockfile) and returns the greeting it printed.
fn greeting(user: &CargoUser, dir: &Path, label: &str, requirement: &str) -> String {
    let project = app(dir, label, requirement);
    let output = user.cargo(&project, &["run", "-q"], None, None);
    let text = must_ok(&format!("cargo run ({label})"), output);
    text.lines()
        .find_map(|line| line.strip_prefix("greeting="))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn cargo_logs_in_publishes_yanks_and_a_dependent_builds_from_arca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ArcaProcess::must_start(ProcessOptions::new(ARCA, dir.path().join("data")));
    let base = server.base_url();
    let session = server.admin_token_blocking();
    create_repo(&base, &session, "rs", "cargo");
    let token = access_token(&base, &session, &["rs:write"]);
    let user = CargoUser::new(dir.path(), &format!("{base}/cargo/rs/index/"));

    // cargo login keeps the token; every later command uses it.
    must_ok(
        "cargo login",
        user.cargo(
            dir.path(),
            &["login", "--registry", "arca"],
            None,
            Some(&format!("{token}\n")),
        ),
    );
    let publish = [
        "publish",
        "--registry",
        "arca",
        "--no-verify",
        "--allow-dirty",
    ];
    let one = library(dir.path(), "0.1.0", "one");
    must_ok(
        "cargo publish 0.1.0",
        user.cargo(&one, &publish, None, None),
    );
    assert_eq!(greeting(&user, dir.path(), "app-one", "0.1"), "one");

    // Published versions never change, and cargo prints why.
    let changed = library(dir.path(), "0.1.0", "changed");
    let refused = user.cargo(&changed, &publish, None, None);
    let text = text_of(&refused);
    assert!(!refused.status.success(), "{text}");
    assert!(text.contains("already exists"), "{text}");

    // A yanked version is not picked by a fresh resolution; unyanked, it is again.
    let two = library(dir.path(), "0.1.1", "two");
    must_ok(
        "cargo publish 0.1.1",
        user.cargo(&two, &publish, None, None),
    );
    let yank = ["yank", "--registry", "arca", "arca-hello-lib@0.1.1"];
    must_ok("cargo yank", user.cargo(dir.path(), &yank, None, None));
    assert_eq!(greeting(&user, dir.path(), "app-yanked", "0.1"), "one");
    let undo = [
        "yank",
        "--undo",
        "--registry",
        "arca",
        "arca-hello-lib@0.1.1",
    ];
    must_ok(
        "cargo yank --undo",
        user.cargo(dir.path(), &undo, None, None),
    );
    assert_eq!(greeting(&user, dir.path(), "app-unyanked", "0.1"), "two");

    let found = must_ok(
        "cargo search",
        user.cargo(
            dir.path(),
            &["search", "--registry", "arca", "hello"],
            None,
            None,
        ),
    );
    assert!(found.contains("arca-hello-lib = \"0.1.1\""), "{found}");
    let owners = must_ok(
        "cargo owner --list",
        user.cargo(
            dir.path(),
            &["owner", "--list", "--registry", "arca", "arca-hello-lib"],
            None,
            None,
        ),
    );
    assert!(owners.contains("admin"), "{owners}");

    // A token without write may build but not publish.
    let reader = access_token(&base, &session, &["rs:read"]);
    let three = library(dir.path(), "0.2.0", "three");
    let denied = user.cargo(&three, &publish, Some(&reader), None);
    assert!(!denied.status.success(), "{}", text_of(&denied));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_reads_its_publishes_on_every_node_and_a_mirror_serves_them_read_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = Region::must_start(region_options(root.path(), "us", 3, Vec::new())).await;
    let eu = Region::must_start(region_options(root.path(), "eu", 1, us.replication_addrs())).await;
    let session = us.token.clone().expect("the primary's admin token");
    let node = |region: &Region, id: u64| region.node(id).base_url();
    let (primary, third, mirror) = (node(&us, 1), node(&us, 3), node(&eu, 1));
    let dir = root.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        create_repo(&primary, &session, "rs", "cargo");
        let token = access_token(&primary, &session, &["rs:write"]);
        let publish = [
            "publish",
            "--registry",
            "arca",
            "--no-verify",
            "--allow-dirty",
        ];
        let index = |base: &str| format!("{base}/cargo/rs/index/");

        // Published through node 1 (cargo waits for the index to list it there), built
        // through node 3 at once.
        let writer = CargoUser::new(&dir.join("writer"), &index(&primary));
        let lib = library(&dir, "1.0.0", "geo");
        must_ok(
            "cargo publish",
            writer.cargo(&lib, &publish, Some(&token), None),
        );
        let reader = CargoUser::new(&dir.join("node-3"), &index(&third));
        let project = app(&dir, "app-node-3", "1");
        must_ok(
            "cargo build through another node",
            reader.cargo(&project, &["build", "-q"], Some(&token), None),
        );

        // The mirror serves it once replicated, and refuses a publish.
        let at_mirror = CargoUser::new(&dir.join("mirror"), &index(&mirror));
        let file = format!("{mirror}/cargo/rs/index/ar/ca/arca-hello-lib");
        let replicated = poll_until(Duration::from_secs(30), || {
            clients::block_on(async {
                let response = reqwest::Client::new()
                    .get(&file)
                    .header("authorization", &token)
                    .send()
                    .await;
                matches!(response, Ok(r) if r.status() == 200)
            })
        });
        assert!(replicated, "the mirror never listed the crate");
        let project = app(&dir, "app-mirror", "1");
        must_ok(
            "cargo build through the mirror",
            at_mirror.cargo(&project, &["build", "-q"], Some(&token), None),
        );
        let lib = library(&dir, "1.0.1", "at-the-mirror");
        let refused = at_mirror.cargo(&lib, &publish, Some(&token), None);
        let text = text_of(&refused);
        assert!(!refused.status.success(), "{text}");
        assert!(text.contains("read-only mirror"), "{text}");
    })
    .await
    .expect("publish and resolve");
}
