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
        assert_eq!(settings.redis_url.as_deref(), Some("redis://redis:6379"));
        assert!(
            settings.drain_timeout_ms < 15_000,
            "drain fits in stop_grace_period"
        );
    }
    // one published port, the load balancer's, speaking gRPC to the replicas
    let ports: Vec<&str> = services["lb"]["ports"]
        .as_sequence()
        .expect("lb ports")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(ports, ["5678:5678"]);
    assert!(nginx.contains("listen 5678") && nginx.contains("grpc_pass grpc://electiond"));

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

#[test]
fn docker_compose_config_accepts_the_file_when_the_tool_is_installed() {
    // CI installs docker-compose; elsewhere this check needs it on PATH
    let Ok(out) = std::process::Command::new("docker-compose")
        .args([
            "-f",
            concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"),
            "config",
            "-q",
        ])
        .output()
    else {
        eprintln!("docker-compose not installed: `docker-compose config` not run");
        return;
    };
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
