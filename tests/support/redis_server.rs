//! A real `redis-server` (Debian's `redis-server` package; `.ci/run` installs it) on a free
//! loopback port, for the shared-cache tests: started and stopped by the test, with no
//! persistence, killed when dropped (also when a test panics).

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// `/usr/bin/redis-server`, or `$TOWER_KRATOS_REDIS_SERVER`.
fn binary() -> PathBuf {
    let path = std::env::var_os("TOWER_KRATOS_REDIS_SERVER")
        .map_or_else(|| PathBuf::from("/usr/bin/redis-server"), PathBuf::from);
    assert!(
        path.is_file(),
        "the shared-cache tests need {} and it is not there: install Debian's `redis-server` \
         (`apt-get install -y redis-server`; .ci/run does), or point TOWER_KRATOS_REDIS_SERVER \
         at another binary",
        path.display()
    );
    path
}

/// A running server.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port) {
                return Self {
                    port,
                    child: Some(child),
                };
            }
        }
        panic!("redis-server did not start on a free port in five tries");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain connection, for inspecting and tampering.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection())
            .expect("connect to the test Redis")
    }

    /// Runs one command and returns its answer.
    pub fn query<T: redis::FromRedisValue>(&self, command: &mut redis::Cmd) -> T {
        command
            .query(&mut self.connection())
            .expect("a command to the test Redis")
    }

    /// Zeroes the server's command counters (`CONFIG RESETSTAT`).
    pub fn reset_stats(&self) {
        let _: () = self.query(redis::cmd("CONFIG").arg("RESETSTAT"));
    }

    /// How many times each command ran since the counters were last zeroed, by lowercase name
    /// (`INFO commandstats`).
    pub fn command_counts(&self) -> std::collections::BTreeMap<String, u64> {
        let info: String = self.query(redis::cmd("INFO").arg("commandstats"));
        info.lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .collect()
    }

    /// The commands that write (or publish) run since the counters were last zeroed.
    pub fn writes(&self) -> std::collections::BTreeMap<String, u64> {
        const WRITES: [&str; 10] = [
            "set",
            "del",
            "zadd",
            "zremrangebyscore",
            "zremrangebyrank",
            "pexpire",
            "publish",
            "eval",
            "evalsha",
            "exec",
        ];
        self.command_counts()
            .into_iter()
            .filter(|(name, _)| WRITES.contains(&name.as_str()))
            .collect()
    }

    /// Stops the server (the port stays this server's for [`RedisServer::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(child) = spawn(self.port) {
                self.child = Some(child);
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// The server on `port`, once it answers PING; `None` if it exited (the port was taken).
fn spawn(port: u16) -> Option<Child> {
    let mut child = Command::new(binary())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        // DEBUG SLEEP stands for a Redis slower than the layer's timeout.
        .args(["--enable-debug-command", "local"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("a URL");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        let pong: Option<String> = client
            .get_connection_with_timeout(Duration::from_millis(200))
            .ok()
            .and_then(|mut connection| redis::cmd("PING").query(&mut connection).ok());
        if pong.as_deref() == Some("PONG") {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
