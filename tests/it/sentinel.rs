//! Sentinel: a failover under load with WAIT loses no acknowledged change, the replica follows
//! the new master without a restart, and watchers converge on what it holds.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, Command};

use electiond::config::Settings;

use crate::harness::*;

/// Three sentinels watching `primary` as "elect"; killed when dropped.
pub(crate) async fn sentinels(primary: &RedisServer) -> (Vec<Child>, Vec<u16>, std::path::PathBuf) {
    sentinels_with(primary.port, None, "").await
}

/// Three sentinels watching the master on `master_port` as "elect", with `extra` lines in
/// their configuration. With `tls` (a directory holding `cert.pem` and `key.pem`) they serve
/// TLS only, and reach the master over TLS.
async fn sentinels_with(
    master_port: u16,
    tls: Option<&std::path::Path>,
    extra: &str,
) -> (Vec<Child>, Vec<u16>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "electiond-sentinel-{}-{master_port}",
        std::process::id(),
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut children = Vec::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let port = free_port();
        let listen = match tls {
            None => format!("port {port}\n"),
            Some(certs) => format!(
                "port 0\ntls-port {port}\ntls-cert-file {cert}\ntls-key-file {key}\n\
                 tls-ca-cert-file {cert}\ntls-auth-clients no\ntls-replication yes\n",
                cert = certs.join("cert.pem").display(),
                key = certs.join("key.pem").display(),
            ),
        };
        let conf = dir.join(format!("sentinel-{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "{listen}bind 127.0.0.1\ndir {}\n\
                 sentinel monitor elect 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds elect 1000\n\
                 sentinel failover-timeout elect 5000\n{extra}",
                dir.display(),
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server --sentinel starts");
        children.push(child);
        ports.push(port);
    }
    (children, ports, dir)
}

/// Settings for a replica in Sentinel mode on the Sentinels at `ports`, reached as
/// `{scheme}://{userinfo}127.0.0.1:port`, master "elect".
pub(crate) fn sentinel_settings(
    prefix: &str,
    ports: &[u16],
    scheme: &str,
    userinfo: &str,
) -> Settings {
    let mut s = bare_settings(prefix);
    s.redis_timeout_ms = 500;
    s.lease_ttl_ms = 0;
    s.redis_sentinels = Some(
        ports
            .iter()
            .map(|p| format!("{scheme}://{userinfo}127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(","),
    );
    s.redis_sentinel_master = Some("elect".into());
    s
}

pub(crate) async fn sentinel_cmd<T: redis::FromRedisValue>(
    port: u16,
    args: &[&str],
) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let mut cmd = redis::cmd("SENTINEL");
    for a in args {
        cmd.arg(*a);
    }
    cmd.query_async(&mut c).await
}

/// Asks the Sentinels to fail over, and waits until they name `replica` the master.
pub async fn fail_over_to(ports: &[u16], replica: &RedisServer) {
    let _: String = sentinel_cmd(ports[0], &["FAILOVER", "elect"])
        .await
        .expect("failover starts");
    wait_for(|| async {
        sentinel_cmd::<Vec<String>>(ports[0], &["GET-MASTER-ADDR-BY-NAME", "elect"])
            .await
            .is_ok_and(|a| a.get(1) == Some(&replica.port.to_string()))
    })
    .await;
}

/// Waits until every Sentinel knows the one replica, so that a failover has somewhere to go.
pub async fn every_sentinel_knows_the_replica(ports: &[u16]) {
    for &p in ports {
        wait_for(|| async move {
            sentinel_cmd::<Vec<redis::Value>>(p, &["REPLICAS", "elect"])
                .await
                .is_ok_and(|r| r.len() == 1)
        })
        .await;
    }
}

#[tokio::test]
async fn a_failover_under_load_loses_no_acknowledged_change() {
    let primary = RedisServer::start().await;
    let replica_redis = RedisServer::start_replica_of(&primary).await;
    let (_sentinels, ports, dir) = sentinels(&primary).await;
    every_sentinel_knows_the_replica(&ports).await;

    let mut s = sentinel_settings(&prefix("sentinel"), &ports, "redis", "");
    s.redis_wait_replicas = 1;
    // room for the replica to acknowledge on a loaded machine (WAIT gets three quarters)
    s.redis_timeout_ms = 2000;
    let replica = Replica::start(s).await;
    let mut w = replica.client("job", "").await.watch().await.unwrap();

    // load: clients enter one after another; each acknowledged Enter is recorded
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let c = replica.client("job", "").await;
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("w{i}");
                // UNAVAILABLE is expected while the failover settles; only successes count
                if c.acting_as("job", &id).enter().await.is_ok() {
                    acked.lock().unwrap().insert(id);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    wait_for(|| async { acked.lock().unwrap().len() >= 10 }).await;
    // the replica is promoted...
    fail_over_to(&ports, &replica_redis).await;
    // ...and once Sentinel has turned the old primary into the new primary's replica (it does
    // so on its next look at it, within about ten seconds), the service acknowledges changes
    // again, without a restart. Until then WAIT cannot be satisfied and calls fail: that is
    // the point of ELECTION_REDIS_WAIT_REPLICAS.
    let before = acked.lock().unwrap().len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while acked.lock().unwrap().len() < before + 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no acknowledged change after the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();

    let term = replica.client("job", "").await.get_term().await.unwrap();
    let held: HashSet<String> = term.candidates.iter().cloned().collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<_> = acked.difference(&held).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost in the failover: {lost:?}"
    );

    // the watcher ends on what the new master holds
    let mut last = None;
    while last.as_ref().map(T::brief) != Some(term.brief()) {
        last = Some(w.next().await);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sentinels_and_a_master_behind_passwords_are_reached_with_them() {
    let primary = RedisServer::start().await;
    let mut admin = primary.connection().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("master-pw")
        .query_async(&mut admin)
        .await
        .unwrap();
    let (_sentinels, ports, dir) = sentinels_with(
        primary.port,
        None,
        "sentinel auth-pass elect master-pw\nrequirepass sentinel-pw\n",
    )
    .await;
    for &p in &ports {
        wait_for_port(p).await;
    }
    let mut s = sentinel_settings(&prefix("sentinel-auth"), &ports, "redis", ":sentinel-pw@");
    s.redis_master_password = Some("master-pw".into());
    let replica = Replica::start(s.clone()).await;
    let mut c = replica.client("locked", "c1").await;
    let mut w = c
        .watch()
        .await
        .expect("pub/sub on the master, with its password");
    assert_eq!(c.enter().await.unwrap().brief(), (1, "c1", vec!["c1"]));
    assert_eq!(w.next().await.brief(), (1, "c1", vec!["c1"]));

    // the master's password is not the Sentinels': a wrong one gets nowhere
    let mut wrong = s;
    wrong.redis_master_password = Some("sentinel-pw".into());
    wrong.redis_timeout_ms = 300;
    let refused = Replica::start(wrong).await;
    expect_code(
        refused.client("locked", "c2").await.enter().await,
        tonic::Code::Unavailable,
    );
    assert_eq!(
        c.get_term().await.unwrap().brief(),
        (1, "c1", vec!["c1"]),
        "the refused call changed nothing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sentinels_and_a_master_over_tls_are_reached_with_the_ca() {
    let certs = self_signed_cert("sentinel-tls");
    let tls_port = free_port();
    let _master = RedisServer::start_with_args(tls_args(&certs, tls_port)).await;
    let (_sentinels, ports, dir) = sentinels_with(tls_port, Some(&certs), "").await;
    for &p in &ports {
        wait_for_port(p).await;
    }
    let mut s = sentinel_settings(&prefix("sentinel-tls"), &ports, "rediss", "");
    let cert = certs.join("cert.pem").display().to_string();
    s.redis_ca_cert = Some(cert.clone());
    // each new connection is two TLS handshakes (a Sentinel, then the master), which an
    // unoptimised build on a busy machine can take longer than the usual 500 ms for
    s.redis_timeout_ms = 2000;
    let replica = Replica::start(s.clone()).await;
    let mut c = replica.client("sealed", "c1").await;
    let mut w = c.watch().await.expect("pub/sub on the master over TLS");
    assert_eq!(c.enter().await.unwrap().brief(), (1, "c1", vec!["c1"]));
    assert_eq!(w.next().await.brief(), (1, "c1", vec!["c1"]));

    // without the CA, neither the Sentinels nor the master are trusted
    let mut untrusting = s;
    untrusting.redis_ca_cert = None;
    untrusting.redis_timeout_ms = 300;
    let refused = Replica::start(untrusting).await;
    expect_code(
        refused.client("sealed", "c2").await.enter().await,
        tonic::Code::Unavailable,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&certs);
}

#[tokio::test]
async fn a_sentinel_that_hangs_holds_up_no_call() {
    let primary = RedisServer::start().await;
    let (sentinels, ports, dir) = sentinels(&primary).await;
    for &p in &ports {
        wait_for_port(p).await;
    }
    // one Sentinel stops answering (its connections open, its replies never come)
    let frozen = sentinels[0].id().expect("a running sentinel");
    let stop = std::process::Command::new("kill")
        .args(["-STOP", &frozen.to_string()])
        .status()
        .expect("kill");
    assert!(stop.success());
    let mut s = sentinel_settings(&prefix("sentinel-hang"), &ports, "redis", "");
    s.redis_timeout_ms = 1000;
    // a new replica: every connection it makes must find the master through the others
    let replica = Replica::start(s).await;
    let mut c = replica.client("hang", "c1").await;
    for i in 0..5 {
        let started = std::time::Instant::now();
        c.acting_as("hang", &format!("c{i}"))
            .enter()
            .await
            .unwrap_or_else(|e| panic!("call {i} with one Sentinel hung: {e:?}"));
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "call {i} waited {:?} for the hung Sentinel",
            started.elapsed()
        );
    }
    assert_eq!(c.get_term().await.unwrap().candidates.len(), 5);
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &frozen.to_string()])
        .status();
    let _ = std::fs::remove_dir_all(&dir);
}
