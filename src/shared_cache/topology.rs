//! Where Redis is, and the connections to it: one server (a URL: plain, TLS, or a Unix socket),
//! a Redis Cluster (its seed nodes), or the primary that Redis Sentinels name (asked again
//! whenever a connection to it fails, so a failover is followed by itself). Commands go through one connection that redis-rs keeps
//! working (a connection manager that reconnects; for a cluster, its cluster connection, which
//! routes by slot, follows `MOVED` and `ASK`, and learns the new primaries after a failover).
//! The revocation subscription is a connection of its own to one server: for a cluster, any
//! node, since a `PUBLISH` on one node reaches the subscribers of every node (cluster-wide
//! pub/sub, not the sharded `SPUBLISH`: revocations are rare, so what sharding saves in cluster
//! bus traffic does not matter, and a subscriber then needs no slot routing and can move to
//! another node whenever its node fails).

use std::{fmt, sync::Arc, time::Duration};

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    sentinel::SentinelClient,
    Cmd, Pipeline, RedisFuture, Value,
};

/// Where Redis is.
#[derive(Clone)]
// One per layer, made once: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Topology {
    /// One server.
    Single(redis::Client),
    /// A Redis Cluster: its client, and a client for each seed node (for the subscription).
    Cluster {
        client: ClusterClient,
        nodes: Vec<redis::Client>,
    },
    /// The primary Sentinels monitor under one name.
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Clients hold passwords: only the shape is shown.
        match self {
            Self::Single(_) => f.write_str("Single"),
            Self::Cluster { nodes, .. } => write!(f, "Cluster({} seed nodes)", nodes.len()),
            Self::Sentinel(_) => f.write_str("Sentinel"),
        }
    }
}

impl Topology {
    /// The server the subscription's `attempt`-th connection goes to: for a cluster, each
    /// seed node in turn, so a failed node is left for the next; with Sentinels, the primary
    /// they name now. `None` when the Sentinels cannot say.
    pub(super) async fn subscriber_client(&self, attempt: usize) -> Option<redis::Client> {
        match self {
            Self::Single(client) => Some(client.clone()),
            Self::Cluster { nodes, .. } => Some(nodes[attempt % nodes.len()].clone()),
            Self::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await.ok(),
        }
    }

    /// Whether a failed call means the connection may lead to the wrong server (a primary
    /// Sentinels have replaced): it is then made anew, from what the Sentinels say. A single
    /// server's and a cluster's connections find their way by themselves.
    pub(super) fn reconnects_on_failure(&self) -> bool {
        matches!(self, Self::Sentinel(_))
    }

    /// The command connection. A single server's connects lazily (on first use) and
    /// reconnects by itself; a cluster's connects now, to learn the slots.
    pub(super) async fn connect(&self, timeout: Duration) -> redis::RedisResult<Connection> {
        // Calls have their own timeouts; these bound connecting and the longest call.
        let connect_within = timeout.max(Duration::from_millis(250));
        let respond_within = timeout.max(super::revocations::RECORDS_TIMEOUT);
        match self {
            Self::Single(client) => single(client.clone(), connect_within, respond_within),
            Self::Sentinel(sentinel) => {
                let primary = sentinel.lock().await.async_get_client().await?;
                single(primary, connect_within, respond_within)
            }
            Self::Cluster { client, .. } => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(connect_within)
                    .set_response_timeout(respond_within);
                client
                    .get_async_connection_with_config(config)
                    .await
                    .map(Connection::Cluster)
            }
        }
    }
}

/// A connection manager for one server: it connects on first use and reconnects by itself.
fn single(
    client: redis::Client,
    connect_within: Duration,
    respond_within: Duration,
) -> redis::RedisResult<Connection> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_within))
        .set_response_timeout(Some(respond_within))
        // The link's gate paces reconnection; the manager does not retry by itself, so a
        // failure (a TLS one: an unknown issuer, another host's certificate) reaches the log
        // with its reason rather than as a timeout of the retries.
        .set_number_of_retries(0);
    ConnectionManager::new_lazy_with_config(client, config).map(Connection::Single)
}

/// The command connection, whichever the topology.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, command: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(command),
            Self::Cluster(connection) => connection.req_packed_command(command),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}
