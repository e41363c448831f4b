//! The real Python clients against the real binary: twine uploads (and retries, and is
//! refused a changed file), pip installs and downloads with `--require-hashes`, uv installs;
//! in a region of three nodes a client reads right after publishing through another node,
//! and a mirror region serves what the primary published and refuses an upload the way twine
//! understands (a 403 naming the primary, never a redirect).
//!
//! twine 7.0.0 and uv come from PyPI into the virtualenv `scripts/setup.sh` creates (so
//! `.ci/run` has them); pip is that virtualenv's own. Each client runs with its own HOME and
//! `PIP_CONFIG_FILE=/dev/null`, so this machine's settings (a local `find-links`, caches) do
//! not leak in. Without them these tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use arca_chaos::content::sha256_hex;
use arca_chaos::{wait_until, ArcaProcess, ProcessOptions, Region};

mod clients;

use clients::{create_repo, must_ok, region_options, ARCA};

fn tools_bin(program: &str) -> String {
    let tools = std::env::var("ARCA_TOOLS_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/arca-tools",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    format!("{tools}/py/bin/{program}")
}

/// Builds a wheel and an sdist of `arca-hello` `version` whose module says `value`, as the
/// packaging tools lay them out (a wheel with its RECORD; an sdist with PKG-INFO).
const BUILD: &str = r#"import base64, hashlib, io, os, sys, tarfile, zipfile
out, name, version, value = sys.argv[1:5]
dist = name.replace("-", "_").replace(".", "_")
meta = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: hello from arca\n"
        f"Requires-Python: >=3.8\n\nA test package.\n")
info = f"{dist}-{version}.dist-info"
files = {f"{dist}/__init__.py": f"VALUE = {value!r}\n", f"{info}/METADATA": meta,
         f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: arca-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
record = []
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(os.path.join(out, f"{dist}-{version}-py3-none-any.whl"), "w") as whl:
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
        whl.writestr(path, data)
    record.append(f"{info}/RECORD,,")
    whl.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
with tarfile.open(os.path.join(out, f"{dist}-{version}.tar.gz"), "w:gz") as sdist:
    for path, text in {"PKG-INFO": meta, "pyproject.toml": "[project]\nname='x'\n"}.items():
        data = text.encode()
        entry = tarfile.TarInfo(f"{dist}-{version}/{path}")
        entry.size = len(data)
        sdist.addfile(entry, io.BytesIO(data))
"#;

/// A Python client command isolated from this machine's configuration.
fn python_tool(program: &str, home: &Path) -> Command {
    let path = tools_bin(program);
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: scripts/setup.sh installs the Python test clients"
    );
    let mut command = Command::new(path);
    command
        .env("HOME", home)
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PIP_NO_CACHE_DIR", "1")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("UV_NO_CONFIG", "1")
        .env("UV_NO_CACHE", "1")
        .env_remove("PIP_INDEX_URL")
        .env_remove("PIP_FIND_LINKS");
    command
}

/// Builds the dists of `version` into `dir/<label>` and returns their paths (wheel, sdist).
fn build(dir: &Path, label: &str, version: &str, value: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(label);
    let script = dir.join("build_dists.py");
    std::fs::write(&script, BUILD).expect("write the build script");
    must_ok(
        "build the dists",
        python_tool("python", dir)
            .arg(&script)
            .arg(&out)
            .args(["arca-hello", version, value])
            .output()
            .expect("run python"),
    );
    (
        out.join(format!("arca_hello-{version}-py3-none-any.whl")),
        out.join(format!("arca_hello-{version}.tar.gz")),
    )
}

fn twine(home: &Path, upload_url: &str, token: &str, files: &[&Path]) -> Output {
    python_tool("twine", home)
        .env("TWINE_USERNAME", "__token__")
        .env("TWINE_PASSWORD", token)
        .env("TWINE_NON_INTERACTIVE", "1")
        .args([
            "upload",
            "--disable-progress-bar",
            "--repository-url",
            upload_url,
        ])
        .args(files)
        .output()
        .expect("run twine")
}

/// `http://__token__:<token>@host/pypi/<repo>/simple/`.
fn index_url(base: &str, repo: &str, token: &str) -> String {
    let host = base.trim_start_matches("http://");
    format!("http://__token__:{token}@{host}/pypi/{repo}/simple/")
}

fn pip_install(home: &Path, index: &str, target: &Path, requirement: &str) -> Output {
    python_tool("pip", home)
        .args([
            "install",
            "--no-input",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--index-url",
            index,
            "--target",
        ])
        .arg(target)
        .arg(requirement)
        .output()
        .expect("run pip")
}

fn installed_value(target: &Path) -> String {
    std::fs::read_to_string(target.join("arca_hello/__init__.py")).unwrap_or_default()
}

#[test]
fn twine_uploads_and_pip_and_uv_install_what_it_uploaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let server = ArcaProcess::must_start(ProcessOptions::new(ARCA, dir.path().join("data")));
    let base = server.base_url();
    let token = server.admin_token_blocking();
    create_repo(&base, &token, "py", "pypi");
    let upload_url = format!("{base}/pypi/py/");
    let (wheel, sdist) = build(dir.path(), "v1", "0.1.0", "one");

    must_ok(
        "twine upload",
        twine(&home, &upload_url, &token, &[&wheel, &sdist]),
    );
    // CI reruns: twine 7 has no --skip-existing for other indexes, so a retry must succeed.
    must_ok(
        "twine upload again",
        twine(&home, &upload_url, &token, &[&wheel, &sdist]),
    );
    // The same file name with other bytes is refused, and twine says why.
    let (changed, _) = build(dir.path(), "changed", "0.1.0", "two");
    let refused = twine(&home, &upload_url, &token, &[&changed]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        !refused.status.success(),
        "a changed file is refused:\n{text}"
    );
    assert!(
        text.contains("409") && text.contains("File already exists"),
        "{text}"
    );

    let index = index_url(&base, "py", &token);
    let target = dir.path().join("pip-target");
    must_ok(
        "pip install",
        pip_install(&home, &index, &target, "arca-hello==0.1.0"),
    );
    assert_eq!(installed_value(&target), "VALUE = 'one'\n");

    // pip download --require-hashes against the hash twine's file has.
    let wheel_sha = sha256_hex(&std::fs::read(&wheel).expect("wheel"));
    let requirements = dir.path().join("requirements.txt");
    std::fs::write(
        &requirements,
        format!("arca-hello==0.1.0 --hash=sha256:{wheel_sha}\n"),
    )
    .expect("requirements");
    let downloads = dir.path().join("downloads");
    must_ok(
        "pip download --require-hashes",
        python_tool("pip", &home)
            .args([
                "download",
                "--no-input",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--require-hashes",
                "--index-url",
                &index,
                "-d",
            ])
            .arg(&downloads)
            .arg("-r")
            .arg(&requirements)
            .output()
            .expect("run pip"),
    );
    let downloaded = std::fs::read(downloads.join("arca_hello-0.1.0-py3-none-any.whl"))
        .expect("downloaded wheel");
    assert_eq!(sha256_hex(&downloaded), wheel_sha);

    // uv resolves through the JSON API and the PEP 658 metadata file.
    let uv_target = dir.path().join("uv-target");
    must_ok(
        "uv pip install",
        python_tool("uv", &home)
            .args([
                "pip",
                "install",
                "--no-deps",
                "--index-url",
                &index,
                "--python",
            ])
            .arg(tools_bin("python"))
            .arg("--target")
            .arg(&uv_target)
            .arg("arca-hello==0.1.0")
            .output()
            .expect("run uv"),
    );
    assert_eq!(installed_value(&uv_target), "VALUE = 'one'\n");

    // Without credentials pip is challenged and, with no way to ask, fails.
    let anonymous = pip_install(
        &home,
        &format!("{base}/pypi/py/simple/"),
        &dir.path().join("anonymous"),
        "arca-hello==0.1.0",
    );
    assert!(
        !anonymous.status.success(),
        "an anonymous install of a private repository fails"
    );

    // `arca ls` and `arca stat` show the project, its versions and files.
    let listed = must_ok(
        "arca ls",
        Command::new(ARCA)
            .args(["ls", "py", "--output", "json"])
            .env("ARCA_SERVER", &base)
            .env("ARCA_TOKEN", &token)
            .output()
            .expect("run arca"),
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed["packages"][0]["name"], "arca-hello", "{listed}");
    let stat = must_ok(
        "arca stat",
        Command::new(ARCA)
            .args(["stat", "py/arca-hello", "--output", "json"])
            .env("ARCA_SERVER", &base)
            .env("ARCA_TOKEN", &token)
            .output()
            .expect("run arca"),
    );
    let stat: serde_json::Value = serde_json::from_str(&stat).expect("json");
    assert_eq!(stat["versions"][0]["version"], "0.1.0", "{stat}");
    assert_eq!(
        stat["versions"][0]["files"].as_array().map(Vec::len),
        Some(2)
    );
    let table = must_ok(
        "arca ls (table)",
        Command::new(ARCA)
            .args(["ls", "py/arca-hello"])
            .env("ARCA_SERVER", &base)
            .env("ARCA_TOKEN", &token)
            .output()
            .expect("run arca"),
    );
    assert!(
        table.contains("arca_hello-0.1.0-py3-none-any.whl"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_reads_its_writes_on_every_node_and_a_mirror_serves_them_read_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let home = root.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let us = Region::must_start(region_options(root.path(), "us", 3, Vec::new())).await;
    let eu = Region::must_start(region_options(root.path(), "eu", 1, us.replication_addrs())).await;
    let token = us.token.clone().expect("the primary's admin token");
    let node = |region: &Region, id: u64| region.node(id).base_url();
    create_repo(&node(&us, 1), &token, "py", "pypi");
    let (wheel, sdist) = build(root.path(), "v1", "1.0.0", "primary");

    // Published through node 1, installed through node 3 at once.
    let upload = format!("{}/pypi/py/", node(&us, 1));
    let (home2, wheel2, sdist2) = (home.clone(), wheel.clone(), sdist.clone());
    let token2 = token.clone();
    tokio::task::spawn_blocking(move || {
        must_ok(
            "twine upload",
            twine(&home2, &upload, &token2, &[&wheel2, &sdist2]),
        )
    })
    .await
    .expect("twine");
    let install = |base: String, target: PathBuf| {
        let (home, token) = (home.clone(), token.clone());
        tokio::task::spawn_blocking(move || {
            pip_install(
                &home,
                &index_url(&base, "py", &token),
                &target,
                "arca-hello==1.0.0",
            )
        })
    };
    let on_three = root.path().join("node-3");
    must_ok(
        "pip install through another node",
        install(node(&us, 3), on_three.clone()).await.expect("pip"),
    );
    assert_eq!(installed_value(&on_three), "VALUE = 'primary'\n");

    // The mirror serves it once replicated.
    let page = format!("{}/pypi/py/simple/arca-hello/", node(&eu, 1));
    let http = arca_chaos::credentials::authorized(reqwest::Client::builder(), Some(&token))
        .build()
        .expect("client");
    wait_until(
        "the mirror to list the project",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            matches!(http.get(&page).send().await, Ok(r) if r.status() == 200).then_some(())
        },
    )
    .await
    .expect("replicated");
    let on_mirror = root.path().join("mirror");
    must_ok(
        "pip install from the mirror",
        install(node(&eu, 1), on_mirror.clone()).await.expect("pip"),
    );
    assert_eq!(installed_value(&on_mirror), "VALUE = 'primary'\n");

    // An upload to the mirror is refused: a 403 naming the primary, which twine reports.
    let (other, _) = build(root.path(), "v2", "2.0.0", "at-the-mirror");
    let mirror_upload = format!("{}/pypi/py/", node(&eu, 1));
    let (home3, token3) = (home.clone(), token.clone());
    let refused =
        tokio::task::spawn_blocking(move || twine(&home3, &mirror_upload, &token3, &[&other]))
            .await
            .expect("twine");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{text}");
    assert!(text.contains("403") && text.contains("mirror"), "{text}");
    assert!(
        !text.contains("RedirectDetected"),
        "no redirect for twine: {text}"
    );
    let versions: serde_json::Value = http
        .get(format!("{}/pypi/py/simple/arca-hello/", node(&us, 2)))
        .header("accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .expect("page")
        .json()
        .await
        .expect("json");
    assert_eq!(versions["versions"], serde_json::json!(["1.0.0"]));
}
