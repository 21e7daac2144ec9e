//! Cluster mode: replicas joined through Redis. Redis is the log: one
//! Redis Stream gives the cluster its single order and its ids (with the
//! epoch of that Redis data set); every replica reads each event once,
//! frames it once, and keeps its local history as a view of the log.
//! Idempotency keys live in Redis, checked in the same script that appends.
//! `POST /disconnect` and topic counts reach every replica over a pub/sub
//! channel, each replica answering with its own count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::events::frame::NewEvent;
use crate::events::hub::{format_id, new_epoch, Hub};
use crate::events::queue::Close;
use crate::metrics::Metrics;
use crate::topic::Topic;

/// The keys share the hash tag `{sidecast}`, so a Redis Cluster serves too.
const LOG: &str = "{sidecast}:log";
const EPOCH: &str = "{sidecast}:epoch";
const CONTROL: &str = "{sidecast}:control";
/// The log is trimmed (approximately) to this many entries; local history
/// limits apply on top.
pub const LOG_MAXLEN: usize = 100_000;
/// How long a cross-replica request waits for the replicas' answers.
const FANOUT_WAIT: Duration = Duration::from_secs(2);

/// Appends a batch atomically, honouring idempotency keys; returns the
/// epoch and the stream ids (comma-separated).
const APPEND: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  redis.call('SET', KEYS[2], ARGV[4])
  epoch = ARGV[4]
end
if ARGV[3] ~= '' then
  local prev = redis.call('GET', '{sidecast}:req:' .. ARGV[3])
  if prev then return {epoch, prev} end
end
local ids = {}
for i = 5, #ARGV, 2 do
  local key = ARGV[i]
  local id = false
  if key ~= '' then id = redis.call('GET', '{sidecast}:idem:' .. key) end
  if not id then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[i + 1])
    if key ~= '' then redis.call('SET', '{sidecast}:idem:' .. key, id, 'PX', ARGV[1]) end
  end
  ids[#ids + 1] = id
end
local joined = table.concat(ids, ',')
if ARGV[3] ~= '' then redis.call('SET', '{sidecast}:req:' .. ARGV[3], joined, 'PX', ARGV[1]) end
return {epoch, joined}
"#;

/// Replaces the epoch only if it is still `ARGV[1]` (one replica wins when
/// several notice a loss at once); returns the epoch in force.
const BUMP_EPOCH: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return cur
"#;

/// Why a cluster operation failed: Redis is not reachable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(String);

impl Unavailable {
    /// Whether the events reached the log even so (only `wait_replicas`
    /// went unmet): a retry should carry the same idempotency keys.
    pub fn appended(&self) -> bool {
        self.0.starts_with("appended")
    }
}

/// One event as the log stores it.
#[derive(Serialize, Deserialize)]
struct Stored {
    t: Vec<String>,
    d: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    r: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Control {
    op: String,
    req: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    reconnect: Option<bool>,
}

/// The seq of a Redis stream id `ms-n`, in the hub's one order.
pub fn seq_of(redis_id: &str) -> Option<u64> {
    let (ms, n) = redis_id.split_once('-')?;
    Some(ms.parse::<u64>().ok()? * 1_000_000 + n.parse::<u64>().ok()?.min(999_999))
}

pub struct Cluster {
    client: redis::Client,
    conn: RwLock<Option<MultiplexedConnection>>,
    connected: AtomicBool,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    wait_replicas: u32,
    append: redis::Script,
}

impl Cluster {
    pub fn new(
        url: &str,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        wait_replicas: u32,
    ) -> Result<Arc<Cluster>, String> {
        let client = redis::Client::open(url).map_err(|e| format!("cluster.redis: {e}"))?;
        Ok(Arc::new(Cluster {
            client,
            conn: RwLock::new(None),
            connected: AtomicBool::new(false),
            hub,
            metrics,
            wait_replicas,
            append: redis::Script::new(APPEND),
        }))
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::SeqCst);
        self.metrics.cluster_connected.set(i64::from(up));
    }

    /// A new connection whose replies may take `response` (a blocking
    /// read must not be cut by the client's default half-second).
    async fn connect(&self, response: Duration) -> redis::RedisResult<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(response));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    async fn conn(&self) -> Result<MultiplexedConnection, Unavailable> {
        if let Some(c) = self.conn.read().await.as_ref() {
            return Ok(c.clone());
        }
        let c = self
            .connect(Duration::from_secs(5))
            .await
            .map_err(|e| Unavailable(format!("Redis is unreachable: {e}")))?;
        *self.conn.write().await = Some(c.clone());
        Ok(c)
    }

    async fn drop_conn(&self) {
        *self.conn.write().await = None;
    }

    /// Appends a batch to the log; the ids streams will carry. `202` only
    /// after this returns.
    pub async fn publish(
        &self,
        events: &[NewEvent],
        request_key: Option<&str>,
        window: Duration,
    ) -> Result<Vec<String>, Unavailable> {
        let mut conn = self.conn().await?;
        let mut inv = self.append.key(LOG);
        inv.key(EPOCH)
            .arg(window.as_millis().max(1) as u64)
            .arg(LOG_MAXLEN)
            .arg(request_key.unwrap_or(""))
            .arg(new_epoch());
        for e in events {
            let stored = Stored {
                t: e.topics.iter().map(|t| t.as_str().to_owned()).collect(),
                d: e.data.clone(),
                n: e.name.clone(),
                u: e.user.clone(),
                r: e.retry,
            };
            inv.arg(e.idempotency_key.as_deref().unwrap_or(""))
                .arg(serde_json::to_string(&stored).unwrap_or_default());
        }
        let result: Result<(String, String), _> =
            tokio::time::timeout(Duration::from_secs(5), inv.invoke_async(&mut conn))
                .await
                .map_err(|_| Unavailable("Redis did not answer within 5s".into()))?;
        let (epoch, joined) = match result {
            Ok(x) => x,
            Err(e) => {
                self.drop_conn().await;
                return Err(Unavailable(format!("Redis is unreachable: {e}")));
            }
        };
        if self.wait_replicas > 0 {
            let acked: Result<i64, _> = redis::cmd("WAIT")
                .arg(self.wait_replicas)
                .arg(2000)
                .query_async(&mut conn)
                .await;
            match acked {
                Ok(n) if n >= i64::from(self.wait_replicas) => {}
                Ok(n) => return Err(Unavailable(format!("appended to the Redis log, but only {n} of the {} Redis replicas asked for (wait_replicas) acknowledged within 2s: not confirmed durable; retry with the same idempotency keys", self.wait_replicas))),
                Err(e) => return Err(Unavailable(format!("Redis is unreachable: {e}"))),
            }
        }
        Ok(joined
            .split(',')
            .map(|id| format_id(&epoch, seq_of(id).unwrap_or(0)))
            .collect())
    }

    fn ingest(&self, epoch: &str, entry: &StreamId) {
        let Some(seq) = seq_of(&entry.id) else { return };
        let Some(redis::Value::BulkString(raw)) = entry.map.get("e") else {
            return;
        };
        let Ok(s) = serde_json::from_slice::<Stored>(raw) else {
            tracing::warn!(id = %entry.id, "skipping a log entry that is not a sidecast event");
            return;
        };
        let topics: Vec<Topic> = s.t.iter().filter_map(|t| Topic::parse(t).ok()).collect();
        if topics.is_empty() {
            return;
        }
        let new = NewEvent {
            topics,
            data: s.d,
            name: s.n,
            user: s.u,
            retry: s.r,
            idempotency_key: None,
        };
        self.hub.ingest(epoch, seq, &new);
    }

    /// Reads the log forever: backfills local history at start (then
    /// signals `ready`), follows new entries, and after a lost connection
    /// resumes from the last id delivered — or starts a new epoch when Redis
    /// is behind what was delivered (data loss), which clients see as
    /// `sidecast.reset`, never as a wrong replay.
    pub async fn run(self: Arc<Self>, ready: tokio::sync::oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut last_id: Option<String> = None;
        let mut epoch: Option<String> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session(&mut last_id, &mut epoch, &mut ready).await {
                Ok(()) => {}
                Err(e) => {
                    if self.is_connected() {
                        tracing::warn!("lost Redis: {e}; reconnecting");
                    }
                    self.set_connected(false);
                    self.drop_conn().await;
                }
            }
            tokio::time::sleep(backoff + Duration::from_millis(fastrand::u64(0..100))).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            if self.is_connected() {
                backoff = Duration::from_millis(100);
            }
        }
    }

    async fn session(
        &self,
        last_id: &mut Option<String>,
        epoch: &mut Option<String>,
        ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
    ) -> redis::RedisResult<()> {
        let mut conn = self.connect(Duration::from_secs(10)).await?;
        let _: bool = conn.set_nx(EPOCH, new_epoch()).await?;
        let mut current: String = conn.get(EPOCH).await?;
        let newest: StreamRangeReply = conn.xrevrange_count(LOG, "+", "-", 1).await?;
        let newest = newest.ids.first().and_then(|e| seq_of(&e.id)).unwrap_or(0);
        let delivered = last_id.as_deref().and_then(seq_of).unwrap_or(0);
        if epoch.as_deref() == Some(current.as_str()) && newest < delivered {
            // Redis lost events we delivered: a new epoch, so that no client
            // is given a wrong replay.
            current = redis::Script::new(BUMP_EPOCH)
                .key(EPOCH)
                .arg(&current)
                .arg(new_epoch())
                .invoke_async(&mut conn)
                .await?;
            tracing::warn!("Redis holds less than was delivered: starting a new epoch");
        }
        if epoch.as_deref() != Some(current.as_str()) {
            // First connect, or a new data set: rebuild local history.
            *last_id = Some("0".to_owned());
            *epoch = Some(current.clone());
            self.hub.ingest_epoch(&current);
        }
        self.set_connected(true);
        tracing::info!("connected to Redis");
        let opts = StreamReadOptions::default().block(2000).count(1000);
        loop {
            let from = last_id.clone().unwrap_or_else(|| "$".to_owned());
            let reply: Option<StreamReadReply> =
                conn.xread_options(&[LOG], &[&from], &opts).await?;
            let entries: Vec<StreamId> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            if entries.is_empty() {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
                continue;
            }
            for e in &entries {
                self.ingest(&current, e);
            }
            *last_id = entries.last().map(|e| e.id.clone());
            if entries.len() < 1000 {
                // Caught up with the log: local history is filled.
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Listens for cross-replica requests and answers with local counts.
    pub async fn control_loop(self: Arc<Self>) {
        loop {
            if let Err(e) = self.control_session().await {
                tracing::debug!("control channel: {e}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn control_session(&self) -> redis::RedisResult<()> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(CONTROL).await?;
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            let Ok(c) = serde_json::from_str::<Control>(&payload) else {
                continue;
            };
            let topic = c.topic.as_deref().and_then(|t| Topic::parse(t).ok());
            let n = match c.op.as_str() {
                "disconnect" => self.hub.disconnect(
                    c.user.as_deref(),
                    topic.as_ref(),
                    Close::Disconnect {
                        reason: c.reason.unwrap_or_else(|| "disconnected".into()),
                        reconnect: c.reconnect.unwrap_or(true),
                    },
                ),
                "count" => topic
                    .as_ref()
                    .and_then(|t| self.hub.topic_info(t))
                    .map_or(0, |i| i.streams),
                _ => continue,
            };
            if let Ok(mut conn) = self.conn().await {
                let key = format!("{{sidecast}}:reply:{}", c.req);
                let _: redis::RedisResult<()> = redis::pipe()
                    .rpush(&key, n)
                    .expire(&key, 10)
                    .query_async(&mut conn)
                    .await;
            }
        }
        Ok(())
    }

    /// Sends a request to every replica (this one included) and sums their
    /// answers.
    async fn fanout(&self, mut c: Control) -> Result<usize, Unavailable> {
        c.req = format!("{:016x}", fastrand::u64(..));
        let mut conn = self.conn().await?;
        let receivers: usize = conn
            .publish(CONTROL, serde_json::to_string(&c).unwrap_or_default())
            .await
            .map_err(|e| Unavailable(format!("Redis is unreachable: {e}")))?;
        let key = format!("{{sidecast}}:reply:{}", c.req);
        let deadline = tokio::time::Instant::now() + FANOUT_WAIT;
        let mut sum = 0usize;
        let mut got = 0;
        let mut blocking = self
            .connect(FANOUT_WAIT + Duration::from_secs(2))
            .await
            .map_err(|e| Unavailable(format!("Redis is unreachable: {e}")))?;
        while got < receivers {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    answered = got,
                    receivers,
                    "not every replica answered in time"
                );
                break;
            }
            let r: Option<(String, usize)> = blocking
                .blpop(&key, left.as_secs_f64().max(0.01))
                .await
                .map_err(|e| Unavailable(format!("Redis is unreachable: {e}")))?;
            match r {
                Some((_, n)) => {
                    sum += n;
                    got += 1;
                }
                None => break,
            }
        }
        Ok(sum)
    }

    /// `POST /disconnect` across every replica; the total closed.
    pub async fn disconnect(
        &self,
        user: Option<&str>,
        topic: Option<&Topic>,
        reason: &str,
        reconnect: bool,
    ) -> Result<usize, Unavailable> {
        self.fanout(Control {
            op: "disconnect".into(),
            req: String::new(),
            user: user.map(str::to_owned),
            topic: topic.map(|t| t.as_str().to_owned()),
            reason: Some(reason.to_owned()),
            reconnect: Some(reconnect),
        })
        .await
    }

    /// Streams open on `topic` across every replica.
    pub async fn cluster_streams(&self, topic: &Topic) -> Result<usize, Unavailable> {
        self.fanout(Control {
            op: "count".into(),
            req: String::new(),
            user: None,
            topic: Some(topic.as_str().to_owned()),
            reason: None,
            reconnect: None,
        })
        .await
    }
}
