//! A few seconds of the benchmark tool, to keep it working (no figure is asserted: timing
//! stays out of the tests).

use std::path::Path;
use std::process::Command;

#[test]
fn the_benchmark_tool_runs_every_scenario_and_reports_json() {
    // `cargo test` at the workspace root builds the service beside the tool
    let electiond = Path::new(env!("CARGO_BIN_EXE_election-bench")).with_file_name("electiond");
    assert!(
        electiond.exists(),
        "{} is not built: run `cargo test` at the workspace root, or `cargo build --bin electiond` first",
        electiond.display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_election-bench"))
        .args(["--duration", "0.5", "--clients", "4", "--elections", "20"])
        .args([
            "--streams",
            "40",
            "--replicas",
            "2",
            "--changes",
            "3",
            "--json",
        ])
        .args([
            "--session-workers",
            "4",
            "--session-elections",
            "30",
            "--session-ttl-ms",
            "1500",
            "--listing-elections",
            "300",
        ])
        .arg("--electiond")
        .arg(&electiond)
        .output()
        .expect("election-bench starts");
    assert!(
        out.status.success(),
        "election-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let loads = report["loads"].as_array().expect("loads");
    let names: Vec<&str> = loads
        .iter()
        .filter_map(|l| l["scenario"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "writes",
            "reads",
            "contention",
            "big election (10,000 candidates): GetTerm",
            "big election (10,000 candidates): Enter/Withdraw",
            "writes, cluster of 1 master",
            "writes, cluster of 3 masters"
        ]
    );
    for l in loads {
        assert!(l["grpc"]["count"].as_u64() > Some(0), "{l}");
        assert_eq!(l["grpc"]["failed"].as_u64(), Some(0), "{l}");
        let scenario = l["scenario"].as_str().unwrap_or("");
        if !scenario.starts_with("big election") {
            assert!(l["direct_redis"]["count"].as_u64() > Some(0), "{l}");
            assert!(l["ratio"].as_f64().is_some(), "{l}");
            assert!(l["direct_cpu"]["bench_us"].as_f64() > Some(0.0), "{l}");
        }
        // where the CPU went: the generator and the replica always; Redis's own counters
        // when it is the one Redis the benchmark started (reads that find nothing due run no
        // function, so only the writing scenarios must show time inside one)
        assert!(l["grpc_cpu"]["bench_us"].as_f64() > Some(0.0), "{l}");
        assert!(l["grpc_cpu"]["replicas_us"].as_f64() > Some(0.0), "{l}");
        if !scenario.contains("cluster") {
            assert!(l["grpc_cpu"]["redis_us"].as_f64() > Some(0.0), "{l}");
            if scenario != "reads" {
                assert!(
                    l["grpc_cpu"]["redis_function_us"].as_f64() > Some(0.0),
                    "{l}"
                );
            }
        }
    }
    // beside etcd, when there is one to start
    let has_etcd = Command::new("etcd").arg("--version").output().is_ok();
    let etcd = &report["etcd"];
    assert_eq!(!etcd.is_null(), has_etcd, "{etcd}");
    if has_etcd {
        for side in [
            "writes_electiond",
            "writes_etcd",
            "reads_electiond",
            "reads_etcd",
        ] {
            assert!(etcd[side]["calls"]["count"].as_u64() > Some(0), "{etcd}");
            assert_eq!(etcd[side]["calls"]["failed"].as_u64(), Some(0), "{etcd}");
        }
    }
    // sessions: both ways keep every candidacy; the dead leader's elections each change once,
    // none before its lease ended
    let sessions = &report["sessions"];
    let keeping = sessions["keeping"].as_array().expect("ways of keeping");
    assert_eq!(keeping.len(), 2, "{sessions}");
    for k in keeping {
        assert_eq!(k["candidacies_left"].as_u64(), Some(4 * 30), "{sessions}");
        assert!(k["calls_per_s"].as_f64() > Some(0.0), "{sessions}");
    }
    let dead = &sessions["dead"];
    assert_eq!(dead["new_leader_ms"]["count"].as_u64(), Some(30), "{dead}");
    assert_eq!(dead["new_leader_ms"]["failed"].as_u64(), Some(0), "{dead}");
    assert_eq!(dead["not_one_event"].as_u64(), Some(0), "{dead}");
    assert_eq!(dead["before_lease_end"].as_u64(), Some(0), "{dead}");
    let fan = &report["fanout"];
    assert_eq!(fan["delivery"]["count"].as_u64(), Some(40 * 3), "{fan}");
    assert_eq!(fan["delivery"]["failed"].as_u64(), Some(0), "{fan}");
    let conns = fan["redis_connections"].as_array().expect("connections");
    assert_eq!(conns.len(), 2);
    for c in conns {
        // pool (16 by default) + one pub/sub connection, and at least the pub/sub one
        let c = c.as_u64().unwrap_or(0);
        assert!((1..=17).contains(&c), "{fan}");
    }
    // the listing: each run lists every election it asked for, and Redis logged its steps
    let listing = &report["listing"];
    let runs = listing["runs"].as_array().expect("listing runs");
    assert_eq!(runs.len(), 3, "{listing}");
    for r in &runs[..2] {
        assert!(r["listed"].as_u64() >= Some(300), "{listing}");
        assert!(r["calls"].as_u64() > Some(0), "{listing}");
    }
    assert_eq!(
        runs[2]["listed"].as_u64(),
        Some(30),
        "a tenth under team-3/: {listing}"
    );
    // the floor: served and measured, with its ratios to this run's reads and writes
    let floor = &report["floor"];
    for phase in ["reads", "writes", "minimal_function"] {
        assert!(floor[phase]["count"].as_u64() > Some(0), "{floor}");
        assert_eq!(floor[phase]["failed"].as_u64(), Some(0), "{floor}");
    }
    for ratio in [
        "replica_ratio_reads",
        "replica_ratio_writes",
        "redis_ratio_reads",
        "redis_ratio_writes",
    ] {
        assert!(floor[ratio].as_f64() > Some(0.0), "{ratio}: {floor}");
    }
    // the floor server takes the fan-out too: every change reaches every stream (its CPU
    // ratio is not asserted: 120 deliveries are below the clock's resolution)
    let floor_fan = &floor["fanout"];
    assert_eq!(
        floor_fan["delivery"]["count"].as_u64(),
        Some(40 * 3),
        "{floor_fan}"
    );
    assert_eq!(
        floor_fan["delivery"]["failed"].as_u64(),
        Some(0),
        "{floor_fan}"
    );
}
