//! Shipping: the Dockerfile and the Kubernetes manifests, parsed with real parsers (the official
//! Dockerfile parser and PyYAML, from the pinned .venv) and checked property by property; and the
//! release binary run as the image's non-root user with only the paths the image provides.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    if let Ok(path) = std::env::var("DR_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test.sh, which creates it from tests/python/requirements.txt",
        venv.display()
    );
    venv
}

fn inspect(kind: &str, path: &Path) -> Value {
    let out = Command::new(python())
        .arg(root().join("tests/python/inspect_deploy.py"))
        .arg(kind)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn words(command: &Value) -> Vec<String> {
    command["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_dockerfile_builds_like_ci_and_runs_minimal_and_non_root() {
    let commands = inspect("dockerfile", &root().join("Dockerfile"));
    let commands = commands.as_array().unwrap();
    let froms: Vec<usize> = commands
        .iter()
        .enumerate()
        .filter(|(_, c)| c["cmd"] == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(froms.len() >= 2, "multi-stage");
    let (build, runtime) = (
        &commands[froms[0]..froms[1]],
        &commands[*froms.last().unwrap()..],
    );
    assert!(
        words(&build[0])
            .iter()
            .any(|w| w.eq_ignore_ascii_case("build"))
    );
    let build_run = build
        .iter()
        .filter(|c| c["cmd"] == "RUN")
        .map(|c| c["original"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        build_run.contains("cargo build --release --locked"),
        "{build_run}"
    );
    let test_script = std::fs::read_to_string(root().join("scripts/test.sh")).unwrap();
    assert!(
        test_script.contains("cargo build --release --locked"),
        "CI must build as the image does"
    );

    let find = |cmd: &str| {
        runtime
            .iter()
            .filter(move |c| c["cmd"] == cmd)
            .collect::<Vec<_>>()
    };
    assert!(
        words(runtime.first().unwrap())[0].contains("slim"),
        "a minimal runtime base"
    );
    let installs = find("RUN")
        .iter()
        .map(|c| c["original"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(installs.contains("ca-certificates"), "{installs}");
    assert!(installs.contains("--no-install-recommends"));
    let user = words(find("USER").last().expect("a USER"))[0].clone();
    assert!(!user.starts_with("0") && user != "root", "runs as {user}");
    let copies = find("COPY");
    assert!(copies.iter().any(|c| {
        c["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "--from=build")
    }));
    assert!(
        find("VOLUME")
            .iter()
            .any(|c| words(c).contains(&"/var/lib/dr".to_string()))
    );
    assert!(
        find("EXPOSE")
            .iter()
            .any(|c| words(c).contains(&"8080".to_string()))
    );
    let health = find("HEALTHCHECK");
    let health = health.last().expect("a HEALTHCHECK");
    assert!(
        health["json"].as_bool().unwrap(),
        "the health check runs without a shell"
    );
    assert_eq!(words(health), vec!["CMD", "dr", "healthcheck"]);
    let entry = find("ENTRYPOINT");
    assert!(entry[0]["json"].as_bool().unwrap());
    assert_eq!(words(entry[0]), vec!["dr"]);
    let cmd = words(find("CMD").last().unwrap());
    assert_eq!(cmd[0], "daemon");
    assert!(find("ENV").iter().any(|c| {
        c["original"]
            .as_str()
            .unwrap()
            .contains("DR_CONFIG=/etc/dr/dr.toml")
    }));

    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for path in ["target", ".git", ".venv"] {
        assert!(
            ignore.lines().any(|l| l.trim() == path),
            ".dockerignore lacks {path}"
        );
    }
}

#[test]
fn the_manifests_run_one_daemon_that_can_never_become_two() {
    let docs = inspect("manifests", &root().join("deploy/kubernetes"));
    let all: Vec<&Value> = docs
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v.as_array().unwrap())
        .collect();
    let of = |kind: &str| {
        all.iter()
            .copied()
            .filter(move |d| d["kind"] == kind)
            .collect::<Vec<_>>()
    };
    for doc in &all {
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], "dr", "{}", doc["kind"]);
        }
    }

    let account = of("ServiceAccount")[0];
    let role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .unwrap();
    assert!(
        role.starts_with("arn:aws:iam::") && role.contains(":role/"),
        "{role}"
    );

    let config_text = of("ConfigMap")[0]["data"]["dr.toml"].as_str().unwrap();
    let config = dr::config::parse(config_text, Path::new("/etc/dr/dr.toml"))
        .expect("the ConfigMap's config validates");
    assert_eq!(config.backend, dr::config::Backend::Aws);
    assert!(
        config.store_path.starts_with("/var/lib/dr"),
        "the store is on the volume"
    );
    assert_eq!(config.api_listen.port(), 8080);
    assert!(
        config.api_listen.ip().is_unspecified(),
        "reachable by the probes and the Service"
    );

    let sets = of("StatefulSet");
    assert_eq!(sets.len(), 1);
    assert!(
        of("Deployment").is_empty(),
        "a Deployment could surge to two pods"
    );
    let set = sets[0];
    assert_eq!(set["spec"]["replicas"], 1);
    let claims = set["spec"]["volumeClaimTemplates"].as_array().unwrap();
    assert_eq!(
        claims[0]["spec"]["accessModes"],
        serde_json::json!(["ReadWriteOnce"])
    );
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert!(!container["image"].as_str().unwrap().ends_with(":latest"));
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == claims[0]["metadata"]["name"] && m["mountPath"] == "/var/lib/dr")
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let requests = &container["resources"]["requests"];
    assert!(
        requests["cpu"].is_string() && requests["memory"].is_string(),
        "resource requests from the measured footprint"
    );
    // Secrets come from a Secret, as files; never as values in the manifests.
    for env in container["env"].as_array().unwrap() {
        let name = env["name"].as_str().unwrap();
        assert!(
            !(name.contains("TOKEN") || name.contains("WEBHOOK") || name.contains("ROUTING_KEY"))
                || name.ends_with("_FILE"),
            "{name} carries a secret inline"
        );
    }
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"].is_string())
    );
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"] == "/etc/dr/secrets" && m["readOnly"] == true)
    );

    let labels = &set["spec"]["template"]["metadata"]["labels"];
    let service = of("Service")[0];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "the Service selects the pod");
    }
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    let budget = of("PodDisruptionBudget")[0];
    for (key, value) in budget["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&labels[key], value, "the budget covers the pod");
    }
    assert_eq!(budget["spec"]["maxUnavailable"], 0);
}

/// Runs `dr` as uid/gid 10001 (the image's user) with `args`.
fn as_image_user(binary: &Path, image: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=10001", "--regid=10001", "--clear-groups", "--"])
        .arg(binary)
        .args(args)
        .current_dir(image.join("var/lib/dr"))
        .env_clear()
        .env("DR_CONFIG", image.join("etc/dr/dr.toml"))
        .stdin(Stdio::null());
    command
}

fn chown(path: &Path, uid: u32) {
    let status = Command::new("chown")
        .arg(format!("{uid}:{uid}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_release_binary_runs_as_the_image_user_with_only_the_image_paths() {
    let binary = root().join("target/release/dr");
    assert!(
        binary.exists(),
        "{} is missing: scripts/test.sh builds it as the Dockerfile does",
        binary.display()
    );
    // The image's layout: a read-only config under etc/dr, a writable volume at var/lib/dr.
    let image = tempfile::tempdir().unwrap();
    let image = image.path();
    std::fs::create_dir_all(image.join("etc/dr")).unwrap();
    std::fs::create_dir_all(image.join("var/lib/dr")).unwrap();
    for dir in [
        image,
        &image.join("etc"),
        &image.join("etc/dr"),
        &image.join("var"),
        &image.join("var/lib"),
    ] {
        let status = Command::new("chmod").arg("755").arg(dir).status().unwrap();
        assert!(status.success());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = std::fs::read_to_string(root().join("config/example.toml"))
        .unwrap()
        .replace(
            "store_path = \"dr-store.redb\"",
            &format!(
                "store_path = \"{}\"",
                image.join("var/lib/dr/dr-store.redb").display()
            ),
        )
        .replace(
            "state_path = \"sim-world.json\"",
            &format!(
                "state_path = \"{}\"",
                image.join("var/lib/dr/sim-world.json").display()
            ),
        )
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
    std::fs::write(image.join("etc/dr/dr.toml"), config).unwrap();

    // Before the volume belongs to the image user, dr says it cannot write, and changes nothing.
    let refused = as_image_user(&binary, image, &["status"]).output().unwrap();
    assert_eq!(
        refused.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Permission denied"));

    chown(&image.join("var/lib/dr"), 10001);
    let valid = as_image_user(&binary, image, &["validate"])
        .output()
        .unwrap();
    assert!(
        valid.status.success(),
        "{}",
        String::from_utf8_lossy(&valid.stderr)
    );
    let mut daemon = as_image_user(&binary, image, &["daemon", "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let check = as_image_user(&binary, image, &["healthcheck", "--ready"])
            .output()
            .unwrap();
        if check.status.success() {
            break;
        }
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");
        assert!(
            Instant::now() < deadline,
            "the daemon never became ready: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = as_image_user(&binary, image, &["status", "--json"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["writer_region"], "us-east-1");
    let kill = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(daemon.wait().unwrap().success());
    // Everything dr wrote is on the volume.
    let mut written: Vec<String> = Vec::new();
    for entry in walk(image) {
        if !entry.starts_with(image.join("var/lib/dr"))
            && entry != image.join("etc/dr/dr.toml")
            && entry.is_file()
        {
            written.push(entry.display().to_string());
        }
    }
    assert!(
        written.is_empty(),
        "dr wrote outside its volume: {written:?}"
    );
    // A health check against nothing fails with exit 1.
    let nothing = as_image_user(&binary, image, &["healthcheck"])
        .output()
        .unwrap();
    assert_eq!(nothing.status.code(), Some(1));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}
