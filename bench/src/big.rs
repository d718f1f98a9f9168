//! One big election: 10,000 candidates with 28-byte ids, at the default limit (one Restore puts
//! in all but one per client), then GetTerm, and each client's Enter and Withdraw of the one
//! more it may hold, through the first replica, each for at most 5 s (inside the lease TTL). What matters is
//! how long each call holds Redis, during which every other election waits: the
//! `inside the operation's function` column.

use super::cpu::Meter;
use super::*;

/// Candidates in the big election.
const CANDIDATES: usize = 10_000;

pub async fn big_election(
    args: &Args,
    channels: &[Channel],
    meter: &mut Meter,
    duration: Duration,
) -> Result<Vec<Load>, String> {
    let name = "big";
    // few clients: each answer is about 300 KB
    let clients = args.clients.min(8);
    let ids: Vec<String> = (0..CANDIDATES - clients)
        .map(|i| format!("candidate-{i:05}-of-the-fleet"))
        .collect();
    // every candidate's lease is fresh after a Restore; the phases stay well inside the
    // replicas' lease TTL (10 s by default), so no candidate expires while they run
    let duration = duration.min(Duration::from_secs(5));
    restore(&channels[0], name, &ids).await?;
    let reads = meter
        .measure(drive("big election: GetTerm", clients, duration, |k| {
            let c = Grpc::new(channels[k % channels.len()].clone());
            // a candidate's own GetTerm: it also keeps that candidate's lease
            let id = ids[k * 997 % ids.len()].clone();
            Box::new(move |_| {
                let (mut c, id) = (c.clone(), id.clone());
                Box::pin(async move { grpc_get_term(&mut c, name, &id).await })
            })
        }))
        .await;
    restore(&channels[0], name, &ids).await?;
    let writes = meter
        .measure(drive(
            "big election: Enter/Withdraw",
            clients,
            duration,
            |k| {
                let c = Grpc::new(channels[k % channels.len()].clone());
                let id = format!("newcomer-{k:02}-of-the-fleet");
                Box::new(move |i| {
                    let (mut c, id) = (c.clone(), id.clone());
                    Box::pin(
                        async move { grpc_enter_withdraw(&mut c, name, &id, i % 2 == 0).await },
                    )
                })
            },
        ))
        .await;
    Ok(vec![
        Load::new(
            "big election (10,000 candidates): GetTerm",
            clients,
            reads,
            None,
        ),
        Load::new(
            "big election (10,000 candidates): Enter/Withdraw",
            clients,
            writes,
            None,
        ),
    ])
}

/// Puts `ids` in as the election's candidates, each with a fresh lease.
async fn restore(channel: &Channel, name: &str, ids: &[String]) -> Result<(), String> {
    let mut c = Grpc::new(channel.clone());
    c.restore(signed(epb::RestoreRequest {
        header: header(name, ""),
        snapshot: Some(epb::Snapshot {
            term: Some(epb::Term {
                id: Some(pb::meta::Epoch { value: 1 }),
                timestamp: None,
                leader: ids[0].clone(),
                candidates: ids.to_vec(),
            }),
        }),
    }))
    .await
    .map(|_| ())
    .map_err(|e| format!("big election: Restore: {e}"))
}
