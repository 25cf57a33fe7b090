//! Shipping: the Dockerfile, the Kubernetes manifests (the single daemon's, and the two daemons'
//! of high availability) and the CloudFormation templates of the shared store, parsed with real
//! parsers (the official Dockerfile parser, PyYAML and cfn-lint's decoder, from the pinned .venv),
//! linted by cfn-lint and checked property by property; and the release binary run as the image's
//! non-root user with only the paths the image provides.

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

// High availability: a daemon in each region's cluster, sharing one checkpoint store on DynamoDB
// (deploy/dynamodb/, deploy/kubernetes/ha/).

/// The regions with a daemon, each with its cluster's manifests in deploy/kubernetes/ha/<region>.
const HA_REGIONS: [&str; 2] = ["us-east-1", "us-west-2"];

/// Every IAM action dr calls on its table, and no other.
/// The store's DynamoDB operations, as IAM actions.
fn store_actions() -> Vec<String> {
    dr::store::DYNAMODB_OPERATIONS
        .iter()
        .map(|op| format!("dynamodb:{op}"))
        .collect()
}

fn cfn_lint() -> PathBuf {
    let lint = python().with_file_name("cfn-lint");
    assert!(
        lint.exists(),
        "{} is missing: run scripts/test.sh, which installs cfn-lint from tests/python/requirements.txt",
        lint.display()
    );
    lint
}

#[test]
fn the_store_templates_pass_cfn_lint() {
    // Each template linted against the regions it is deployed in.
    for (template, regions) in [
        ("global-table-mrsc.yaml", &["us-east-1", "us-west-2"][..]),
        ("single-region-table.yaml", &["us-east-2"][..]),
    ] {
        let out = Command::new(cfn_lint())
            .arg("--regions")
            .args(regions)
            .arg("--")
            .arg(root().join("deploy/dynamodb").join(template))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cfn-lint refuses {template} (exit {:?}):\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The one resource of `kind` in a template, with its logical id.
fn the_resource<'a>(template: &'a Value, kind: &str) -> (&'a str, &'a Value) {
    let found: Vec<(&str, &Value)> = template["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id.as_str(), r))
        .collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

/// Checks what both templates share: the table's schema and billing, and the policy with its
/// output. Returns the table name's default and the policy's resources.
fn check_store_template(template: &Value, kind: &str) -> (String, Vec<Value>) {
    assert_eq!(template["Resources"].as_object().unwrap().len(), 2);
    let (table_id, table) = the_resource(template, kind);
    assert_eq!(table["DeletionPolicy"], "Retain");
    assert_eq!(table["UpdateReplacePolicy"], "Retain");
    let props = &table["Properties"];
    assert_eq!(props["TableName"], serde_json::json!({"Ref": "TableName"}));
    assert_eq!(
        props["KeySchema"],
        serde_json::json!([
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ])
    );
    // Only the key's attributes: no index could be keyed on anything else.
    assert_eq!(
        props["AttributeDefinitions"],
        serde_json::json!([
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ])
    );
    assert_eq!(props["BillingMode"], "PAY_PER_REQUEST");
    for absent in [
        "GlobalSecondaryIndexes",
        "LocalSecondaryIndexes",
        "TimeToLiveSpecification",
        "StreamSpecification",
    ] {
        assert!(props.get(absent).is_none(), "{kind} has {absent}");
    }

    let (policy_id, policy) = the_resource(template, "AWS::IAM::ManagedPolicy");
    let statements = policy["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0]["Effect"], "Allow");
    let mut actions: Vec<&str> = statements[0]["Action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    actions.sort_unstable();
    let mut expected = store_actions();
    expected.sort_unstable();
    assert_eq!(
        actions, expected,
        "exactly the actions dr calls on its table"
    );
    assert_eq!(
        template["Outputs"]["StorePolicyArn"]["Value"],
        serde_json::json!({"Ref": policy_id}),
        "the policy's ARN is an output, to attach to each cluster's role"
    );
    assert_eq!(
        template["Outputs"]["TableName"]["Value"],
        serde_json::json!({"Ref": table_id})
    );
    let table_name = template["Parameters"]["TableName"]["Default"]
        .as_str()
        .unwrap()
        .to_string();
    (
        table_name,
        statements[0]["Resource"].as_array().unwrap().clone(),
    )
}

/// The config of `region`'s cluster, as TOML.
fn ha_config(region: &str) -> toml::Table {
    let docs = inspect(
        "manifests",
        &root().join("deploy/kubernetes/ha").join(region),
    );
    let text = docs["configmap.yaml"][0]["data"]["dr.toml"]
        .as_str()
        .unwrap();
    text.parse().unwrap()
}

#[test]
fn the_mrsc_global_table_is_strongly_consistent_with_a_witness_in_a_third_region() {
    let template = inspect(
        "cloudformation",
        &root().join("deploy/dynamodb/global-table-mrsc.yaml"),
    );
    let (table_name, resources) = check_store_template(&template, "AWS::DynamoDB::GlobalTable");
    let (_, table) = the_resource(&template, "AWS::DynamoDB::GlobalTable");
    let props = &table["Properties"];
    assert_eq!(props["MultiRegionConsistency"], "STRONG");

    let mut replicas: Vec<&str> = props["Replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Region"].as_str().unwrap())
        .collect();
    replicas.sort_unstable();
    assert_eq!(replicas, HA_REGIONS, "a replica where each daemon runs");
    for replica in props["Replicas"].as_array().unwrap() {
        assert_eq!(replica["DeletionProtectionEnabled"], true);
        assert_eq!(
            replica["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
            true
        );
        assert!(replica.get("ReplicaStreamSpecification").is_none());
    }
    let witnesses = props["GlobalTableWitnesses"].as_array().unwrap();
    assert_eq!(witnesses.len(), 1);
    let witness = witnesses[0]["Region"].as_str().unwrap();
    assert!(
        !replicas.contains(&witness),
        "the witness is a third region"
    );
    assert_eq!(
        witness, "us-east-2",
        "in the US region set with the replicas"
    );

    // The stack goes to a replica region: CloudFormation creates a global table from one.
    assert_eq!(
        template["Rules"]["StackInAReplicaRegion"]["Assertions"][0]["Assert"],
        serde_json::json!({"Fn::Contains": [HA_REGIONS, {"Ref": "AWS::Region"}]})
    );

    // The policy covers the table in each replica region, as each daemon calls its own.
    let expected: Vec<Value> = replicas
        .iter()
        .map(|region| {
            serde_json::json!({"Fn::Sub": format!(
                "arn:${{AWS::Partition}}:dynamodb:{region}:${{AWS::AccountId}}:table/${{TableName}}"
            )})
        })
        .collect();
    assert_eq!(resources, expected);

    // The shipped config names this table and leaves table_region unset: each daemon calls the
    // replica in its own region.
    for region in HA_REGIONS {
        let config = ha_config(region);
        assert_eq!(config["store"]["table"].as_str(), Some(table_name.as_str()));
        assert!(config["store"].get("table_region").is_none());
    }
}

#[test]
fn the_single_region_table_lives_outside_both_application_regions() {
    let template = inspect(
        "cloudformation",
        &root().join("deploy/dynamodb/single-region-table.yaml"),
    );
    let (table_name, resources) = check_store_template(&template, "AWS::DynamoDB::Table");
    let (table_id, table) = the_resource(&template, "AWS::DynamoDB::Table");
    let props = &table["Properties"];
    assert_eq!(props["DeletionProtectionEnabled"], true);
    assert_eq!(
        props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(
        resources,
        vec![serde_json::json!({"Fn::GetAtt": [table_id, "Arn"]})]
    );
    // CloudFormation refuses to create it where a daemon runs.
    assert_eq!(
        template["Rules"]["StackOutsideTheApplicationRegions"]["Assertions"][0]["Assert"],
        serde_json::json!({"Fn::Not": [{"Fn::Contains": [HA_REGIONS, {"Ref": "AWS::Region"}]}]})
    );
    for region in HA_REGIONS {
        assert_eq!(
            ha_config(region)["store"]["table"].as_str(),
            Some(table_name.as_str())
        );
    }
}

/// Sets the value at `path` (object keys, array positions, and `env:NAME` for the env entry
/// named NAME) to a placeholder, and returns what it was. Panics if there is nothing there.
fn take_region_field(doc: &mut Value, path: &[&str]) -> Value {
    let mut at = doc;
    for key in path {
        at = if let Some(name) = key.strip_prefix("env:") {
            at.as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|e| e["name"] == name)
                .unwrap_or_else(|| panic!("no env {name}"))
                .get_mut("value")
                .unwrap()
        } else if let Ok(index) = key.parse::<usize>() {
            at.get_mut(index).unwrap()
        } else {
            at.get_mut(*key)
                .unwrap_or_else(|| panic!("no {key} in {path:?}"))
        };
    }
    std::mem::replace(at, Value::String("<region-specific>".into()))
}

/// The fields in which the two clusters' manifests differ: (file, path in its document).
const REGION_FIELDS: [(&str, &[&str]); 4] = [
    (
        "serviceaccount.yaml",
        &["metadata", "annotations", "eks.amazonaws.com/role-arn"],
    ),
    (
        "statefulset.yaml",
        &[
            "spec",
            "template",
            "spec",
            "nodeSelector",
            "topology.kubernetes.io/region",
        ],
    ),
    (
        "statefulset.yaml",
        &[
            "spec",
            "template",
            "spec",
            "containers",
            "0",
            "env",
            "env:DR_DAEMON_REGION",
        ],
    ),
    (
        "statefulset.yaml",
        &[
            "spec",
            "template",
            "spec",
            "containers",
            "0",
            "env",
            "env:DR_DAEMON_ID",
        ],
    ),
];

fn the_doc<'a>(docs: &'a Value, file: &str, kind: &str) -> &'a Value {
    let in_file = docs[file].as_array().unwrap();
    assert_eq!(in_file.len(), 1, "{file}");
    assert_eq!(in_file[0]["kind"], kind, "{file}");
    &in_file[0]
}

#[test]
fn the_ha_manifests_run_one_daemon_per_region_the_same_but_for_the_region() {
    let single = inspect("manifests", &root().join("deploy/kubernetes"));
    let single_set = &single["statefulset.yaml"][0];
    let single_container = &single_set["spec"]["template"]["spec"]["containers"][0];
    let single_config: toml::Table = single["configmap.yaml"][0]["data"]["dr.toml"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let mut stripped = Vec::new();
    for region in HA_REGIONS {
        let mut docs = inspect(
            "manifests",
            &root().join("deploy/kubernetes/ha").join(region),
        );
        let files: Vec<&String> = docs.as_object().unwrap().keys().collect();
        assert_eq!(
            files,
            [
                "configmap.yaml",
                "namespace.yaml",
                "poddisruptionbudget.yaml",
                "service.yaml",
                "serviceaccount.yaml",
                "statefulset.yaml"
            ],
            "a complete set for {region}'s cluster"
        );
        for (file, docs) in docs.as_object().unwrap() {
            for doc in docs.as_array().unwrap() {
                if doc["kind"] != "Namespace" {
                    assert_eq!(doc["metadata"]["namespace"], "dr", "{region} {file}");
                }
            }
        }
        the_doc(&docs, "namespace.yaml", "Namespace");

        // Its own IRSA role: a role trusts one cluster's OIDC provider.
        let account = the_doc(&docs, "serviceaccount.yaml", "ServiceAccount");
        let role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            .as_str()
            .unwrap();
        assert!(
            role.starts_with("arn:aws:iam::")
                && role.ends_with(&format!(":role/dr-orchestrator-{region}")),
            "{role}"
        );

        let set = the_doc(&docs, "statefulset.yaml", "StatefulSet");
        assert_eq!(set["spec"]["replicas"], 1, "one daemon per cluster");
        assert!(
            set["spec"].get("volumeClaimTemplates").is_none(),
            "the store is the table, not a volume"
        );
        let pod = &set["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
        assert_eq!(pod["nodeSelector"]["topology.kubernetes.io/region"], region);
        for volume in pod["volumes"].as_array().unwrap() {
            assert!(
                volume["configMap"].is_object()
                    || volume["secret"].is_object()
                    || volume["emptyDir"].is_object(),
                "{region}: nothing in the pod outlives it: {volume}"
            );
        }
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        let container = &containers[0];
        let env = |name: &str| {
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .unwrap_or_else(|| panic!("{region}: no {name}"))["value"]
                .clone()
        };
        assert_eq!(env("DR_DAEMON_REGION"), region);
        assert_eq!(env("DR_DAEMON_ID"), format!("dr-{region}"));
        // Everything else as the single daemon runs: image, arguments, the other variables
        // (secrets as files), probes, resources, security contexts, grace period.
        let others = |c: &Value| {
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| !e["name"].as_str().unwrap().starts_with("DR_DAEMON_"))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(others(container), others(single_container));
        for key in [
            "image",
            "args",
            "ports",
            "livenessProbe",
            "readinessProbe",
            "resources",
            "securityContext",
        ] {
            assert_eq!(container[key], single_container[key], "{region}: {key}");
        }
        for key in ["securityContext", "terminationGracePeriodSeconds"] {
            assert_eq!(
                pod[key], single_set["spec"]["template"]["spec"][key],
                "{region}: {key}"
            );
        }

        let labels = &set["spec"]["template"]["metadata"]["labels"];
        let service = the_doc(&docs, "service.yaml", "Service");
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&labels[key], value, "the Service selects the pod");
        }
        assert_eq!(service["spec"]["ports"][0]["port"], 8080);
        let budget = the_doc(&docs, "poddisruptionbudget.yaml", "PodDisruptionBudget");
        for (key, value) in budget["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(&labels[key], value, "the budget covers the pod");
        }
        assert_eq!(budget["spec"]["maxUnavailable"], 0);

        // The config: the single daemon's, with the shared store and the lease in place of the
        // redb file and the simulator's state file.
        let config_map = the_doc(&docs, "configmap.yaml", "ConfigMap");
        let mut config: toml::Table = config_map["data"]["dr.toml"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(config["store"]["backend"].as_str(), Some("dynamodb"));
        assert!(config["store"]["table"].is_str());
        assert!(config["daemon"]["lease"].is_str());
        assert!(config.get("store_path").is_none(), "no file store");
        config.remove("store");
        config.remove("daemon");
        let mut single_config = single_config.clone();
        single_config.remove("store_path");
        single_config.remove("sim");
        assert_eq!(
            config, single_config,
            "{region}: the single daemon's config"
        );

        for (file, path) in REGION_FIELDS {
            let value = take_region_field(&mut docs[file][0], path);
            assert!(
                value.as_str().unwrap().contains(region),
                "{region} {file} {path:?}: {value}"
            );
        }
        stripped.push(docs);
    }
    assert_eq!(
        stripped[0], stripped[1],
        "the clusters' manifests differ only in {REGION_FIELDS:?}"
    );
}

/// Waits on the config parser: passes once it reads `[store]` and `[daemon]`.
#[test]
fn the_ha_configmaps_config_validates() {
    for region in HA_REGIONS {
        let docs = inspect(
            "manifests",
            &root().join("deploy/kubernetes/ha").join(region),
        );
        let text = docs["configmap.yaml"][0]["data"]["dr.toml"]
            .as_str()
            .unwrap();
        let config = dr::config::parse(text, Path::new("/etc/dr/dr.toml"))
            .unwrap_or_else(|e| panic!("{region}: the ConfigMap's config does not validate: {e}"));
        assert_eq!(config.backend, dr::config::Backend::Aws);
        assert_eq!(config.api_listen.port(), 8080);
        assert!(config.api_listen.ip().is_unspecified());
    }
}
