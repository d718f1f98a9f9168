//! Network namespaces the tests create, to break real links: a veth pair to the host, packet
//! filters that drop silently (all packets, or a random share of them), and a rate limit that
//! makes the link slow. Needs root, `ip` and `tc` (iproute2) and `iptables`.

/// A network namespace joined to the host by a veth pair: host side `.1`, namespace side `.2`
/// of a /30 in 10.213.0.0/16 chosen from the test's process id and `n` (each test of one run
/// uses its own `n`). Removed when dropped.
pub struct Namespace {
    pub name: String,
    host_link: String,
    /// The namespace's end of the veth pair.
    ns_link: String,
    /// The host's address on the link (what the namespace reaches the host by).
    pub host_ip: String,
    /// The namespace's address on the link.
    pub ns_ip: String,
}

/// Runs one of iproute2's commands (`ip`, `tc`); it must succeed.
fn run(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("iproute2's {program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    run("ip", args);
}

impl Namespace {
    pub fn create(n: u32) -> Self {
        assert!(n < 8);
        let id = std::process::id();
        let block = (id % 2000) * 8 + n;
        let (a, b) = (block / 64, (block % 64) * 4);
        let ns = Namespace {
            name: format!("ed-{id}-{n}"),
            host_link: format!("edh{id}x{n}"),
            ns_link: format!("edn{id}x{n}"),
            host_ip: format!("10.213.{a}.{}", b + 1),
            ns_ip: format!("10.213.{a}.{}", b + 2),
        };
        let peer = ns.ns_link.clone();
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_link,
        ]);
        ip(&["link", "set", &ns.host_link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/30", ns.ns_ip), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// Drops, silently, the namespace's packets matching `rule` in both directions (`add`) or
    /// stops dropping them (`del`).
    pub fn filter(&self, action: &str, rules: &[&[&str]]) {
        for rule in rules {
            let mut args = vec!["netns", "exec", &self.name, "iptables", action];
            args.extend_from_slice(rule);
            args.extend_from_slice(&["-j", "DROP"]);
            let status = std::process::Command::new("ip")
                .args(&args)
                .status()
                .expect("ip netns exec iptables");
            assert!(status.success(), "iptables {args:?}");
        }
    }
}

impl Namespace {
    /// Drops a random `share` ("0.3") of the namespace's packets, both ways (`-A`), or stops
    /// (`-D`, with the same share): a lossy link, on which TCP retransmits.
    pub fn lossy(&self, action: &str, share: &str) {
        let random = [
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            share,
        ];
        let out: Vec<&str> = ["OUTPUT"].iter().chain(random.iter()).copied().collect();
        let inp: Vec<&str> = ["INPUT"].iter().chain(random.iter()).copied().collect();
        self.filter(action, &[&out, &inp]);
    }

    /// Makes the link slow both ways (`on`), or fast again: a token-bucket limit of `kbit`
    /// kbit/s that queues up to `queue_ms` before dropping, so that under load every packet
    /// waits. (A stand-in for netem's delay, which not every kernel has.)
    pub fn slow(&self, on: bool, kbit: u32, queue_ms: u32) {
        let rate = format!("{kbit}kbit");
        let latency = format!("{queue_ms}ms");
        for (netns, dev) in [(None, &self.host_link), (Some(&self.name), &self.ns_link)] {
            let mut args: Vec<&str> = Vec::new();
            if let Some(n) = netns {
                args.extend(["netns", "exec", n.as_str(), "tc"]);
            }
            if on {
                args.extend(["qdisc", "add", "dev", dev.as_str(), "root", "tbf", "rate"]);
                args.extend([rate.as_str(), "burst", "4kb", "latency", latency.as_str()]);
            } else {
                args.extend(["qdisc", "del", "dev", dev.as_str(), "root"]);
            }
            run(if netns.is_some() { "ip" } else { "tc" }, &args);
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_link])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
