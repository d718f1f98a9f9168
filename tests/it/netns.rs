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

/// A private network: machines (network namespaces) on one bridge, which itself lives in a
/// namespace of its own, and a link from the host to the bridge, so that the test reaches every
/// machine while the machines can be cut off from each other. Addresses are `<subnet>.<k>` in a
/// /24 of 10.214.0.0/16 chosen from the test's process id and `n` (each test of one run uses its
/// own `n`, below 8); the host is `.1`. Everything is removed when dropped.
pub struct Lan {
    /// The namespace holding the bridge.
    bridge: String,
    host_link: String,
    /// The first three bytes of every address, `10.214.x`.
    subnet: String,
    tag: String,
    machines: Vec<String>,
}

/// One machine of a [`Lan`]: a network namespace with one address. Its processes are started
/// with [`Machine::command`]; [`Machine::isolate`] cuts it off from other machines.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    pub ip: String,
}

impl Lan {
    pub fn create(n: u32) -> Self {
        assert!(n < 8);
        let id = std::process::id();
        let tag = format!("{id}x{n}");
        let lan = Lan {
            bridge: format!("ed-{tag}-lan"),
            host_link: format!("eh{tag}"),
            subnet: format!("10.214.{}", (id % 32) * 8 + n),
            tag,
            machines: Vec::new(),
        };
        ip(&["netns", "add", &lan.bridge]);
        lan.in_bridge(&["link", "add", "br0", "type", "bridge"]);
        lan.in_bridge(&["link", "set", "br0", "up"]);
        let peer = format!("ep{}", lan.tag);
        lan.plug(&lan.host_link, &peer);
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", lan.subnet),
            "dev",
            &lan.host_link,
        ]);
        ip(&["link", "set", &lan.host_link, "up"]);
        lan
    }

    fn in_bridge(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.bridge, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// A veth pair whose `peer` end joins the bridge; `end` stays where it is made.
    fn plug(&self, end: &str, peer: &str) {
        ip(&["link", "add", end, "type", "veth", "peer", "name", peer]);
        ip(&["link", "set", peer, "netns", &self.bridge]);
        self.in_bridge(&["link", "set", peer, "master", "br0"]);
        self.in_bridge(&["link", "set", peer, "up"]);
    }

    /// A new machine on the network.
    pub fn machine(&mut self) -> Machine {
        let k = self.machines.len() + 2;
        assert!(k < 250);
        let m = Machine {
            name: format!("ed-{}-m{k}", self.tag),
            ip: format!("{}.{k}", self.subnet),
        };
        ip(&["netns", "add", &m.name]);
        self.machines.push(m.name.clone());
        let end = format!("em{}{k}", self.tag);
        self.plug(&end, &format!("eb{}{k}", self.tag));
        ip(&["link", "set", &end, "netns", &m.name]);
        m.ip_cmd(&["addr", "add", &format!("{}/24", m.ip), "dev", &end]);
        m.ip_cmd(&["link", "set", &end, "up"]);
        m.ip_cmd(&["link", "set", "lo", "up"]);
        m
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_link])
            .status();
        for name in self.machines.iter().chain(std::iter::once(&self.bridge)) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .status();
        }
    }
}

impl Machine {
    fn ip_cmd(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// A command that runs `program` on this machine.
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Drops, silently and both ways, every packet between this machine and `others`
    /// (the host still reaches it).
    pub fn isolate(&self, others: &[&Machine]) {
        for o in others {
            for rule in [["INPUT", "-s"], ["OUTPUT", "-d"]] {
                let args = [rule[0], rule[1], o.ip.as_str(), "-j", "DROP"];
                self.iptables("-A", &args);
            }
        }
    }

    /// Lifts every cut of [`Self::isolate`].
    pub fn rejoin(&self) {
        for chain in ["INPUT", "OUTPUT"] {
            self.iptables("-F", &[chain]);
        }
    }

    fn iptables(&self, action: &str, rule: &[&str]) {
        let mut args = vec!["netns", "exec", &self.name, "iptables", action];
        args.extend_from_slice(rule);
        run("ip", &args);
    }
}
