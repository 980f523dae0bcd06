//! A real Sentinel setup on loopback for the Sentinel tests: a primary, a replica of it and
//! three `redis-sentinel` processes (Debian's `redis-sentinel`; `.ci/run` installs it) that
//! fail over half a second after the primary stops answering. Killed when dropped.

use super::redis_server::free_port;
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// The name the Sentinels monitor the primary under.
pub const PRIMARY_NAME: &str = "tower-kratos-primary";

/// A running primary, replica and three Sentinels.
#[derive(Debug)]
pub struct RedisSentinels {
    dir: PathBuf,
    /// The primary's and the replica's ports, in that order at start.
    servers: Vec<(u16, Mutex<Option<Child>>)>,
    sentinels: Vec<(u16, Child)>,
}

impl RedisSentinels {
    /// Everything started, the replica in sync and every Sentinel aware of the others.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tower-kratos-sentinel-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the Sentinels");
        let primary = free_port();
        let replica = free_port();
        let server = |port: u16, replica_of: Option<u16>| {
            let mut command = Command::new("redis-server");
            command
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                // A replica writes the primary's snapshot where it runs: here, not in the
                // repository (a stray dump.rdb once reached a commit).
                .args(["--dir", &dir.to_string_lossy()]);
            if let Some(primary) = replica_of {
                command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
            }
            quiet(&mut command).spawn().expect("start redis-server")
        };
        let servers = vec![
            (primary, Mutex::new(Some(server(primary, None)))),
            (replica, Mutex::new(Some(server(replica, Some(primary))))),
        ];
        let sentinels = (0..3)
            .map(|_| {
                let port = free_port();
                let config = dir.join(format!("sentinel-{port}.conf"));
                std::fs::write(
                    &config,
                    format!(
                        "port {port}\nbind 127.0.0.1\nprotected-mode no\n\
                         sentinel monitor {PRIMARY_NAME} 127.0.0.1 {primary} 2\n\
                         sentinel down-after-milliseconds {PRIMARY_NAME} 500\n\
                         sentinel failover-timeout {PRIMARY_NAME} 3000\n"
                    ),
                )
                .expect("a Sentinel configuration");
                let child = quiet(Command::new("redis-sentinel").arg(&config))
                    .spawn()
                    .expect("start redis-sentinel (Debian's redis-sentinel)");
                (port, child)
            })
            .collect();
        let started = Self {
            dir,
            servers,
            sentinels,
        };
        started.wait_until_ready();
        started
    }

    /// `host:port` of every Sentinel, for the layer.
    pub fn addresses(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// The primary's port, as the first Sentinel names it now.
    pub fn primary_port(&self) -> u16 {
        let (_host, port): (String, String) = query(
            self.sentinels[0].0,
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(PRIMARY_NAME),
        );
        port.parse().expect("a port")
    }

    /// Kills the current primary (SIGKILL).
    pub fn kill_primary(&self) -> u16 {
        let port = self.primary_port();
        for (server_port, child) in &self.servers {
            if *server_port == port {
                if let Some(mut child) = child.lock().unwrap_or_else(PoisonError::into_inner).take()
                {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        port
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self.sentinels.iter().all(|(port, _)| {
                let replicas: Option<Vec<redis::Value>> = try_query(
                    *port,
                    redis::cmd("SENTINEL").arg("REPLICAS").arg(PRIMARY_NAME),
                );
                let others: Option<Vec<redis::Value>> = try_query(
                    *port,
                    redis::cmd("SENTINEL").arg("SENTINELS").arg(PRIMARY_NAME),
                );
                replicas.is_some_and(|found| !found.is_empty())
                    && others.is_some_and(|found| found.len() >= 2)
            });
            let synced =
                try_query::<String>(self.servers[1].0, redis::cmd("INFO").arg("replication"))
                    .is_some_and(|info| info.contains("master_link_status:up"));
            if ready && synced {
                return;
            }
            assert!(Instant::now() < deadline, "the Sentinels never got ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (_, child) in &self.servers {
            if let Some(mut child) = child.lock().unwrap_or_else(PoisonError::into_inner).take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn quiet(command: &mut Command) -> &mut Command {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

fn try_query<T: redis::FromRedisValue>(port: u16, command: &mut redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut connection = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    command.query(&mut connection).ok()
}

fn query<T: redis::FromRedisValue>(port: u16, command: &mut redis::Cmd) -> T {
    try_query(port, command).expect("a command to a Sentinel")
}
