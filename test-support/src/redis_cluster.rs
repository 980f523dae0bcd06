//! A real Redis Cluster on loopback for the cluster tests: six `redis-server` processes (three
//! primaries with a replica each) on free ports, joined by `redis-cli --cluster create`
//! (Debian's `redis-tools`; `.ci/run` installs it), killed when dropped.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::redis_server::free_port;

/// A running cluster.
#[derive(Debug)]
pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    port: u16,
    child: std::sync::Mutex<Option<Child>>,
}

impl Node {
    fn running(&self) -> bool {
        self.child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }
}

impl RedisCluster {
    /// Three primaries, a replica each, every slot covered and the cluster `ok`.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tower-kratos-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the cluster");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let child = spawn(&dir, port);
            nodes.push(Node {
                port,
                child: std::sync::Mutex::new(Some(child)),
            });
        }
        let cluster = Self { dir, nodes };
        for node in &cluster.nodes {
            wait_for_ping(node.port);
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli (Debian's redis-tools) to create the cluster");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_until_ok();
        cluster
    }

    /// Seed URLs for the layer: every node's, starting at `first` (so replicas of the app
    /// subscribe on different nodes).
    pub fn seed_urls(&self, first: usize) -> Vec<String> {
        let count = self.nodes.len();
        (0..count)
            .map(|index| {
                format!(
                    "redis://127.0.0.1:{}",
                    self.nodes[(first + index) % count].port
                )
            })
            .collect()
    }

    /// A plain connection to node `index`.
    pub fn connection(&self, index: usize) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.nodes[index].port))
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("connect to a cluster node")
    }

    /// Runs one command on node `index`.
    pub fn query<T: redis::FromRedisValue>(&self, index: usize, command: &mut redis::Cmd) -> T {
        command
            .query(&mut self.connection(index))
            .expect("a command to a cluster node")
    }

    /// The indexes of the nodes that are primaries now (and running).
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&index| self.nodes[index].running())
            .filter(|&index| {
                let role: Vec<redis::Value> = self.query(index, &mut redis::cmd("ROLE"));
                matches!(role.first(), Some(redis::Value::BulkString(name)) if name == b"master")
            })
            .collect()
    }

    /// The node index serving `slot` as primary now.
    pub fn primary_of(&self, slot: u16) -> usize {
        let port = self.slot_owner_port(slot);
        self.nodes
            .iter()
            .position(|node| node.port == port)
            .expect("a known node owns the slot")
    }

    fn slot_owner_port(&self, slot: u16) -> u16 {
        let any = self.running()[0];
        let shards: Vec<Vec<redis::Value>> = self.query(any, redis::cmd("CLUSTER").arg("SLOTS"));
        for range in shards {
            let number = |value: &redis::Value| match value {
                redis::Value::Int(number) => *number,
                other => panic!("not a number: {other:?}"),
            };
            let (start, end) = (number(&range[0]), number(&range[1]));
            if (start..=end).contains(&i64::from(slot)) {
                if let redis::Value::Array(primary) = &range[2] {
                    return u16::try_from(number(&primary[1])).expect("a port");
                }
            }
        }
        panic!("no node owns slot {slot}");
    }

    /// The running nodes' indexes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&index| self.nodes[index].running())
            .collect()
    }

    /// Kills node `index` (SIGKILL).
    pub fn kill(&self, index: usize) {
        let child = self.nodes[index]
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether every running node says the cluster is `ok` and covers every slot.
    pub fn is_ok(&self) -> bool {
        self.running().iter().all(|&index| {
            let info: String = self.query(index, redis::cmd("CLUSTER").arg("INFO"));
            info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
        })
    }

    /// Waits (at most 20 s) until [`RedisCluster::is_ok`].
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.is_ok() {
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(dir: &std::path::Path, port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .args(["--dir", &dir.to_string_lossy()])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        // A failover within about a second of a primary's death.
        .args(["--cluster-node-timeout", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server")
}

fn wait_for_ping(port: u16) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("a URL");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pong: Option<String> = client
            .get_connection_with_timeout(Duration::from_millis(200))
            .ok()
            .and_then(|mut connection| redis::cmd("PING").query(&mut connection).ok());
        if pong.as_deref() == Some("PONG") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a cluster node did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
