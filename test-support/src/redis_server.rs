//! A real `redis-server` (Debian's `redis-server` package; `.ci/run` installs it) on a free
//! loopback port, for the shared-cache tests: started and stopped by the test, with no
//! persistence, killed when dropped (also when a test panics).

use tower_kratos::authenticate::KratosLayerBuilder;

use super::pki::{pki, Pki};
use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
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

/// How the layer reaches the server, from `TOWER_KRATOS_REDIS`: `plain` (the default), `tls`,
/// `mtls` (the server asks for a client certificate), or `acl` (mutual TLS, as a user limited to
/// the tests' prefix and to the commands the crate sends). The whole shared-cache suite runs
/// over each (`.ci/run` runs it once per flavor). The test's own connection ([`RedisServer::
/// connection`]) is always plain and unrestricted, on a port of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Plain,
    Tls,
    MutualTls,
    AclUser,
}

impl Flavor {
    fn from_env() -> Self {
        match std::env::var("TOWER_KRATOS_REDIS").as_deref() {
            Ok("tls") => Self::Tls,
            Ok("mtls") => Self::MutualTls,
            Ok("acl") => Self::AclUser,
            Ok("plain") | Err(_) => Self::Plain,
            Ok(other) => panic!("TOWER_KRATOS_REDIS={other}: not plain, tls, mtls or acl"),
        }
    }
}

/// The least-privilege user of the `acl` flavor, as the guide's "Managed and clustered Redis"
/// (`src/guide/shared_cache.md`) gives it (prefix `test`): its keys, its channel, and the commands the crate sends, nothing of
/// `@admin` or `@dangerous`.
pub const ACL_USER: &str = "tower";
const ACL_PASSWORD: &str = "a-long-password-for-the-tests-acl-user";
pub const ACL_RULES: &str = "resetkeys ~test:* resetchannels &test:* -@all +ping +get +mget +set \
    +del +eval +zadd +zrangebyscore +zremrangebyscore +zremrangebyrank +pexpire +publish \
    +subscribe +multi +exec";

/// A running server.
#[derive(Debug)]
pub struct RedisServer {
    /// The plain port: the test's own.
    port: u16,
    flavor: Flavor,
    /// The TLS port, with its certificates, for the TLS flavors.
    tls: Option<(u16, std::sync::Arc<Pki>)>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port, of the flavor `TOWER_KRATOS_REDIS` names.
    pub fn start() -> Self {
        Self::start_as(Flavor::from_env())
    }

    /// Starts a server of this flavor on free ports.
    pub fn start_as(flavor: Flavor) -> Self {
        Self::start_named(flavor, &["127.0.0.1", "localhost"])
    }

    /// Starts a server of this flavor whose TLS certificate names only `names`.
    pub fn start_named(flavor: Flavor, names: &[&str]) -> Self {
        let tls = (flavor != Flavor::Plain).then(|| {
            // The tests are the application: they choose the process's rustls provider.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            (0, std::sync::Arc::new(pki(names)))
        });
        for _ in 0..5 {
            let port = free_port();
            let tls = tls.clone().map(|(_, pki)| (free_port(), pki));
            let mut server = Self {
                port,
                flavor,
                tls,
                child: None,
            };
            if let Some(child) = server.spawn() {
                server.child = Some(child);
                return server;
            }
        }
        panic!("redis-server did not start on a free port in five tries");
    }

    /// The URL the layer is given: `redis://127.0.0.1:PORT`, or `rediss://` on the TLS port
    /// (with the ACL user's name and password for `acl`).
    pub fn url(&self) -> String {
        match (&self.tls, self.flavor) {
            (None, _) => format!("redis://127.0.0.1:{}", self.port),
            (Some((port, _)), Flavor::AclUser) => {
                format!("rediss://{ACL_USER}:{ACL_PASSWORD}@127.0.0.1:{port}")
            }
            (Some((port, _)), _) => format!("rediss://127.0.0.1:{port}"),
        }
    }

    /// The TLS settings the layer needs for this server: its CA, and for mutual TLS a client
    /// certificate.
    pub fn configure(&self, builder: KratosLayerBuilder) -> KratosLayerBuilder {
        let Some((_, pki)) = &self.tls else {
            return builder;
        };
        let builder = builder.redis_ca_pem(&pki.ca_pem);
        match self.flavor {
            Flavor::MutualTls | Flavor::AclUser => {
                builder.redis_client_identity_pem(&pki.client_cert_pem, &pki.client_key_pem)
            }
            _ => builder,
        }
    }

    /// The reference app's variables for this server (`examples/axum_app.rs`): `REDIS_URL`,
    /// and the certificate files a TLS flavor needs.
    pub fn app_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("REDIS_URL", self.url())];
        if self.tls.is_some() {
            let file = |name: &str| self.cert_dir().join(name).to_string_lossy().into_owned();
            env.push(("REDIS_CA_FILE", file("ca.pem")));
            if self.flavor != Flavor::Tls {
                env.push(("REDIS_CLIENT_CERT_FILE", file("client.pem")));
                env.push(("REDIS_CLIENT_KEY_FILE", file("client.key")));
            }
        }
        env
    }

    /// Where a TLS flavor's certificate files are.
    fn cert_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("tower-kratos-redis-{}", self.port))
    }

    /// The test CA, server and client certificates of a TLS flavor.
    pub fn pki(&self) -> Option<&Pki> {
        self.tls.as_ref().map(|(_, pki)| &**pki)
    }

    /// The plain port's URL (the test's own connection), whatever the flavor.
    pub fn plain_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// What the server refused the ACL user, from `ACL LOG` (empty for other flavors).
    pub fn acl_denials(&self) -> Vec<String> {
        if self.flavor != Flavor::AclUser {
            return Vec::new();
        }
        let log: Vec<redis::Value> = self.query(redis::cmd("ACL").arg("LOG"));
        log.iter().map(|entry| format!("{entry:?}")).collect()
    }

    /// A plain connection, for inspecting and tampering.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.plain_url())
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

    /// Starts it again on the same ports, empty.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(child) = self.spawn() {
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
        // The least-privilege user never needed more than it has.
        if self.child.is_some() && !std::thread::panicking() {
            let denied = self.acl_denials();
            assert!(denied.is_empty(), "refused to the ACL user: {denied:?}");
        }
        self.stop();
    }
}

/// A free loopback port for a Redis process, free with the cluster bus port (+10000) a cluster
/// node would also take, both below the kernel's
/// ephemeral range: a port picked from inside that range (by binding port 0) could be taken by
/// any process's outgoing connection between the check and redis-server's own bind, which made
/// a node fail to start now and then on a busy machine. Handed out once per process, from a
/// start that differs between processes.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Below the ephemeral range's start, bus port included: [10000, low - 10000).
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = low.saturating_sub(20_000).max(1);
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = 10_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair below the ephemeral range");
}

impl RedisServer {
    /// The server on its ports, once it answers PING on the plain one; `None` if it exited (a
    /// port was taken).
    fn spawn(&self) -> Option<Child> {
        let port = self.port;
        let mut command = Command::new(binary());
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            // DEBUG SLEEP stands for a Redis slower than the layer's timeout.
            .args(["--enable-debug-command", "local"]);
        if let Some((tls_port, pki)) = &self.tls {
            let dir = self.cert_dir();
            std::fs::create_dir_all(&dir).expect("a directory for the certificates");
            let write = |name: &str, pem: &str| {
                let path = dir.join(name);
                std::fs::write(&path, pem).expect("a certificate file");
                path.to_string_lossy().into_owned()
            };
            write("client.pem", &pki.client_cert_pem);
            write("client.key", &pki.client_key_pem);
            let clients = if self.flavor == Flavor::Tls {
                "no"
            } else {
                "yes"
            };
            command
                .args(["--tls-port", &tls_port.to_string()])
                .args([
                    "--tls-cert-file",
                    &write("server.pem", &pki.server_cert_pem),
                ])
                .args(["--tls-key-file", &write("server.key", &pki.server_key_pem)])
                .args(["--tls-ca-cert-file", &write("ca.pem", &pki.ca_pem)])
                .args(["--tls-auth-clients", clients]);
        }
        if self.flavor == Flavor::AclUser {
            // From the start: a client that connects before a later ACL SETUSER would be
            // refused, and counted as a denial.
            command
                .args(["--user", ACL_USER, "on", &format!(">{ACL_PASSWORD}")])
                .args(ACL_RULES.split_whitespace());
        }
        let mut child = command
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
}
