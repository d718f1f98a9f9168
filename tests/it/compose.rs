//! Static checks of the docker-compose deployment (no Docker engine is needed): the file
//! parses, each service's settings are ones `electiond` accepts, and the ports agree.

use std::collections::HashMap;

fn load(path: &str) -> serde_yaml::Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/{path}")).expect("file exists");
    serde_yaml::from_str(&text).expect("valid YAML")
}

/// A service's environment, with `<<: *anchor` merges resolved.
fn environment(services: &serde_yaml::Value, name: &str) -> HashMap<String, String> {
    let service = &services[name];
    let own = &service["environment"];
    let env = if own.is_null() {
        &service["<<"]["environment"]
    } else {
        own
    };
    env.as_mapping()
        .unwrap_or_else(|| panic!("{name} has an environment"))
        .iter()
        .map(|(k, v)| {
            let v = match v {
                serde_yaml::Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
            };
            (k.as_str().unwrap().to_owned(), v)
        })
        .collect()
}

#[test]
fn the_compose_deployment_is_consistent_with_the_service() {
    let compose = load("docker-compose.yml");
    let services = &compose["services"];
    let nginx = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf"))
        .expect("nginx.conf");

    // Redis persists every acknowledged write and reports its health
    let redis_cmd: Vec<&str> = services["redis"]["command"]
        .as_sequence()
        .expect("redis command")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        redis_cmd.windows(2).any(|w| w == ["--appendonly", "yes"]),
        "{redis_cmd:?}"
    );
    assert!(
        redis_cmd
            .windows(2)
            .any(|w| w == ["--appendfsync", "always"]),
        "{redis_cmd:?}"
    );
    assert!(!services["redis"]["healthcheck"].is_null());

    for name in ["electiond-1", "electiond-2", "electiond-3"] {
        let env = environment(services, name);
        let settings = electiond::config::Settings::from_vars(env.clone())
            .unwrap_or_else(|e| panic!("{name}: electiond would refuse its settings: {e}"));
        let port = settings.listen_addr.port();
        assert!(
            nginx.contains(&format!("server {name}:{port}")),
            "nginx must send to {name} on the port it listens on ({port})"
        );
        let console = settings
            .console_addr
            .as_deref()
            .expect("the console is on")
            .rsplit_once(':')
            .map(|(host, port)| (host.to_owned(), port.to_owned()))
            .expect("host:port");
        assert_eq!(console.0, "0.0.0.0", "reachable from the balancer");
        assert!(
            nginx.contains(&format!("server {name}:{}", console.1)),
            "nginx must send the console to {name} on its console port"
        );
        assert_eq!(settings.redis_url.as_deref(), Some("redis://redis:6379"));
        assert!(
            settings.drain_timeout_ms < 15_000,
            "drain fits in stop_grace_period"
        );
    }
    // the load balancer's ports, gRPC and the console, are the only ones published
    let ports: Vec<&str> = services["lb"]["ports"]
        .as_sequence()
        .expect("lb ports")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    // on loopback unless the operator chooses otherwise
    assert_eq!(
        ports,
        [
            "${ELECTIOND_PUBLISH:-127.0.0.1:5678}:5678",
            "${ELECTIOND_CONSOLE_PUBLISH:-127.0.0.1:8080}:8080"
        ]
    );
    assert!(nginx.contains("listen 5678") && nginx.contains("grpc_pass grpc://electiond"));
    // the console's live changes pass the balancer as they come
    assert!(nginx.contains("listen 8080") && nginx.contains("proxy_buffering off"));

    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("Dockerfile");
    assert_eq!(
        dockerfile
            .lines()
            .filter(|l| l.starts_with("FROM "))
            .count(),
        2,
        "multi-stage"
    );
    assert!(dockerfile.contains("USER 10001"), "runs as non-root");
}

/// The words of a service's command (a list, or `sh -c` with a script).
fn command(services: &serde_yaml::Value, name: &str) -> Vec<String> {
    let service = &services[name];
    let cmd = if service["command"].is_null() {
        &service["<<"]["command"]
    } else {
        &service["command"]
    };
    cmd.as_sequence()
        .unwrap_or_else(|| panic!("{name} has a command"))
        .iter()
        .filter_map(|v| v.as_str())
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

#[test]
fn the_sentinel_override_is_consistent_with_the_service() {
    let base = load("docker-compose.yml");
    let over = load("docker-compose.sentinel.yml");
    let services = &over["services"];
    let sentinel_names = ["sentinel-1", "sentinel-2", "sentinel-3"];

    // two replicas of the primary, and Sentinels that watch the primary as "elect" with a
    // majority quorum; every Redis (each may become master) refuses writes while it has not
    // both replicas, as electiond waits for both
    for name in ["redis-replica-1", "redis-replica-2"] {
        let replica = command(services, name).join(" ");
        assert!(replica.contains("--replicaof redis 6379"), "{replica}");
        assert!(
            replica.contains(&format!("--replica-announce-ip {name}")),
            "{replica}"
        );
    }
    for name in ["redis", "redis-replica-1", "redis-replica-2"] {
        let redis = command(services, name).join(" ");
        assert!(
            redis.contains("--min-replicas-to-write 2"),
            "{name}: {redis}"
        );
    }
    for name in sentinel_names {
        let script = command(services, name).join(" ");
        assert!(
            script.contains("'sentinel monitor elect redis 6379 2'"),
            "{name}: {script}"
        );
        assert!(script.contains("--sentinel"), "{name}: {script}");
        assert!(script.contains("'port 26379'"), "{name}: {script}");
    }

    for name in ["electiond-1", "electiond-2", "electiond-3"] {
        // the override's variables replace the main file's, as docker-compose merges them
        let mut env = environment(&base["services"], name);
        env.extend(environment(services, name));
        let settings = electiond::config::Settings::from_vars(env)
            .unwrap_or_else(|e| panic!("{name}: electiond would refuse its settings: {e}"));
        assert_eq!(
            settings.redis_url, None,
            "{name} still has a fixed Redis URL"
        );
        assert_eq!(settings.redis_sentinel_master.as_deref(), Some("elect"));
        let expected: Vec<String> = sentinel_names
            .iter()
            .map(|s| format!("redis://{s}:26379"))
            .collect();
        assert_eq!(settings.sentinels(), expected, "{name}");
        assert_eq!(settings.redis_wait_replicas, 2, "{name}");
    }
}

/// Runs `docker-compose config -q` on `files`; skipped where the tool is missing.
fn compose_config(files: &[&str]) {
    // CI installs docker-compose; elsewhere this check needs it on PATH
    let mut cmd = std::process::Command::new("docker-compose");
    for f in files {
        cmd.arg("-f")
            .arg(format!("{}/{f}", env!("CARGO_MANIFEST_DIR")));
    }
    let Ok(out) = cmd.args(["config", "-q"]).output() else {
        eprintln!("docker-compose not installed: `docker-compose config` not run");
        return;
    };
    assert!(
        out.status.success(),
        "docker-compose config {files:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn docker_compose_config_accepts_the_files_when_the_tool_is_installed() {
    compose_config(&["docker-compose.yml"]);
    compose_config(&["docker-compose.yml", "docker-compose.sentinel.yml"]);
}
