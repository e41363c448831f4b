//! The real NuGet client (nuget.exe 5.8.0 on Debian's mono, both installed by
//! `scripts/setup.sh`) against the real binary, with a HOME of its own: `nuget pack` of a
//! package, `nuget push` with `X-NuGet-ApiKey` (a token), a second push of the same version
//! refused with 409, `nuget install` and `nuget restore` from a private feed (nuget.exe reads
//! anonymously, is challenged with `Basic`, and retries with the source's credentials from
//! nuget.config), `nuget delete` unlisting a version that stays restorable where it is pinned, and a mirror
//! region serving the feed read-only.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use arca_chaos::{ArcaProcess, ProcessOptions, Region};

mod clients;

use clients::{
    access_token, block_on, create_repo, must_ok, poll_until, region_options, text_of, ARCA,
};

/// nuget.exe, where `scripts/setup.sh` puts it.
fn nuget_exe() -> PathBuf {
    let tools = std::env::var_os("ARCA_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/arca-tools")
        });
    let exe = tools.join("nuget/nuget.exe");
    assert!(
        exe.exists(),
        "nuget.exe is not installed at {} (scripts/setup.sh installs it and mono)",
        exe.display()
    );
    exe
}

/// One NuGet user: a HOME of its own and a nuget.config naming the feed `arca` with
/// credentials.
struct NugetUser {
    home: PathBuf,
    config: PathBuf,
    exe: PathBuf,
}

impl NugetUser {
    fn new(dir: &Path, feed: &str, token: &str) -> Self {
        let home = dir.join("nuget-home");
        std::fs::create_dir_all(&home).expect("home");
        let config = home.join("nuget.config");
        std::fs::write(
            &config,
            format!(
                r#"<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources><clear /><add key="arca" value="{feed}" protocolVersion="3" /></packageSources>
  <packageSourceCredentials><arca><add key="Username" value="ci" /><add key="ClearTextPassword" value="{token}" /></arca></packageSourceCredentials>
</configuration>"#
            ),
        )
        .expect("nuget.config");
        Self {
            home,
            config,
            exe: nuget_exe(),
        }
    }

    fn nuget(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new("mono")
            .current_dir(dir)
            .arg(&self.exe)
            .args(args)
            .arg("-NonInteractive")
            .env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join("data"))
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .output()
            .expect("run mono (scripts/setup.sh installs it)")
    }

    /// `nuget pack` of `Acme.Hello` `version` whose content file says `greeting`.
    fn pack(&self, dir: &Path, version: &str, greeting: &str) -> PathBuf {
        let work = dir.join(format!("pkg-{version}-{greeting}"));
        std::fs::create_dir_all(&work).expect("work");
        std::fs::write(work.join("hello.txt"), greeting).expect("content");
        std::fs::write(
            work.join("Acme.Hello.nuspec"),
            format!(
                r#"<?xml version="1.0"?>
<package><metadata>
  <id>Acme.Hello</id><version>{version}</version><authors>acme</authors>
  <description>Says {greeting}</description>
</metadata>
<files><file src="hello.txt" target="content" /></files></package>"#
            ),
        )
        .expect("nuspec");
        let out = work.join("out");
        must_ok(
            "nuget pack",
            self.nuget(
                &work,
                &[
                    "pack",
                    "Acme.Hello.nuspec",
                    "-OutputDirectory",
                    &out.to_string_lossy(),
                    "-NoDefaultExcludes",
                ],
            ),
        );
        out.join(format!("Acme.Hello.{version}.nupkg"))
    }

    fn config(&self) -> String {
        self.config.to_string_lossy().into_owned()
    }
}

#[test]
fn nuget_pushes_refuses_a_duplicate_installs_restores_and_unlists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ArcaProcess::must_start(ProcessOptions::new(ARCA, dir.path().join("data")));
    let base = server.base_url();
    let session = server.admin_token_blocking();
    create_repo(&base, &session, "nu", "nuget");
    let token = access_token(&base, &session, &["nu:write", "nu:delete"]);
    let feed = format!("{base}/nuget/nu/v3/index.json");
    let user = NugetUser::new(dir.path(), &feed, &token);
    let work = dir.path();

    let package = user.pack(work, "1.0.0", "hello");
    let push = |package: &Path| {
        user.nuget(
            work,
            &[
                "push",
                &package.to_string_lossy(),
                "-Source",
                &feed,
                "-ApiKey",
                &token,
            ],
        )
    };
    must_ok("nuget push", push(&package));
    let duplicate = push(&package);
    let text = text_of(&duplicate);
    assert!(!duplicate.status.success(), "{text}");
    assert!(text.contains("409") || text.contains("Conflict"), "{text}");

    // Installed from the private feed: anonymous first, then the credentials after the 401.
    let installed = work.join("installed");
    must_ok(
        "nuget install",
        user.nuget(
            work,
            &[
                "install",
                "Acme.Hello",
                "-Version",
                "1.0.0",
                "-Source",
                "arca",
                "-OutputDirectory",
                &installed.to_string_lossy(),
                "-ConfigFile",
                &user.config(),
            ],
        ),
    );
    let content = installed.join("Acme.Hello.1.0.0/content/hello.txt");
    assert_eq!(
        std::fs::read_to_string(&content).expect("installed content"),
        "hello"
    );
    assert_eq!(
        std::fs::read(installed.join("Acme.Hello.1.0.0/Acme.Hello.1.0.0.nupkg")).expect("nupkg"),
        std::fs::read(&package).expect("package"),
        "byte for byte"
    );

    // A restore of packages.config.
    let project = work.join("project");
    std::fs::create_dir_all(&project).expect("project");
    std::fs::write(
        project.join("packages.config"),
        r#"<?xml version="1.0" encoding="utf-8"?><packages><package id="Acme.Hello" version="1.0.0" /></packages>"#,
    )
    .expect("packages.config");
    let restored = project.join("packages");
    must_ok(
        "nuget restore",
        user.nuget(
            &project,
            &[
                "restore",
                "packages.config",
                "-PackagesDirectory",
                &restored.to_string_lossy(),
                "-ConfigFile",
                &user.config(),
            ],
        ),
    );
    assert!(restored.join("Acme.Hello.1.0.0/content/hello.txt").exists());

    // delete unlists: gone from search, still installable.
    let newer = user.pack(work, "1.1.0", "again");
    must_ok("nuget push 1.1.0", push(&newer));
    must_ok(
        "nuget delete",
        user.nuget(
            work,
            &[
                "delete",
                "Acme.Hello",
                "1.1.0",
                "-Source",
                &feed,
                "-ApiKey",
                &token,
            ],
        ),
    );
    let search: serde_json::Value = block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/nuget/nu/v3/search?q=acme"))
            .basic_auth("ci", Some(&token))
            .send()
            .await
            .expect("search")
            .json()
            .await
            .expect("json")
    });
    assert_eq!(search["data"][0]["version"], "1.0.0", "{search}");
    // An unlisted version stays restorable where it is pinned (packages.config, lock files).
    let pinned = work.join("pinned");
    std::fs::create_dir_all(&pinned).expect("pinned");
    std::fs::write(
        pinned.join("packages.config"),
        r#"<?xml version="1.0" encoding="utf-8"?><packages><package id="Acme.Hello" version="1.1.0" /></packages>"#,
    )
    .expect("packages.config");
    let restored = pinned.join("packages");
    must_ok(
        "nuget restore of an unlisted version",
        user.nuget(
            &pinned,
            &[
                "restore",
                "packages.config",
                "-PackagesDirectory",
                &restored.to_string_lossy(),
                "-ConfigFile",
                &user.config(),
            ],
        ),
    );
    assert_eq!(
        std::fs::read_to_string(restored.join("Acme.Hello.1.1.0/content/hello.txt"))
            .expect("content"),
        "again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serves_a_feed_read_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = Region::must_start(region_options(root.path(), "us", 1, Vec::new())).await;
    let eu = Region::must_start(region_options(root.path(), "eu", 1, us.replication_addrs())).await;
    let session = us.token.clone().expect("the primary's admin token");
    let (primary, mirror) = (us.node(1).base_url(), eu.node(1).base_url());
    let dir = root.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        create_repo(&primary, &session, "nu", "nuget");
        let token = access_token(&primary, &session, &["nu:write"]);
        let feed = format!("{primary}/nuget/nu/v3/index.json");
        let user = NugetUser::new(&dir.join("primary"), &feed, &token);
        let package = user.pack(&dir, "2.0.0", "geo");
        must_ok(
            "nuget push",
            user.nuget(
                &dir,
                &[
                    "push",
                    &package.to_string_lossy(),
                    "-Source",
                    &feed,
                    "-ApiKey",
                    &token,
                ],
            ),
        );
        let at_mirror = format!("{mirror}/nuget/nu/v3/index.json");
        let versions = format!("{mirror}/nuget/nu/v3/package/acme.hello/index.json");
        let replicated = poll_until(Duration::from_secs(30), || {
            block_on(async {
                let response = reqwest::Client::new()
                    .get(&versions)
                    .basic_auth("ci", Some(&token))
                    .send()
                    .await;
                matches!(response, Ok(r) if r.status() == 200)
            })
        });
        assert!(replicated, "the mirror never listed the package");
        let reader = NugetUser::new(&dir.join("mirror"), &at_mirror, &token);
        let installed = dir.join("from-mirror");
        must_ok(
            "nuget install from the mirror",
            reader.nuget(
                &dir,
                &[
                    "install",
                    "Acme.Hello",
                    "-Version",
                    "2.0.0",
                    "-Source",
                    "arca",
                    "-OutputDirectory",
                    &installed.to_string_lossy(),
                    "-ConfigFile",
                    &reader.config(),
                ],
            ),
        );
        let newer = user.pack(&dir, "2.0.1", "at-the-mirror");
        let refused = reader.nuget(
            &dir,
            &[
                "push",
                &newer.to_string_lossy(),
                "-Source",
                &at_mirror,
                "-ApiKey",
                &token,
            ],
        );
        let text = text_of(&refused);
        assert!(!refused.status.success(), "{text}");
        assert!(text.contains("403") || text.contains("Forbidden"), "{text}");
    })
    .await
    .expect("mirror");
}
