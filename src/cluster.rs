//! Cluster mode: replicas joined through Redis. Redis is the log: one
//! Redis Stream gives the cluster its single order and its ids (with the
//! epoch of that Redis data set); every replica reads each event once,
//! frames it once, and keeps its local history as a view of the log.
//! Idempotency keys live in Redis, checked in the same script that appends.
//! `POST /disconnect` and topic counts reach every replica over a pub/sub
//! channel, each replica answering with its own count.

mod link;
mod wire;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, RedisError};

use crate::events::frame::NewEvent;
use crate::events::hub::{format_id, new_epoch, Hub};
use crate::events::queue::Close;
use crate::metrics::Metrics;
use crate::topic::Topic;
use link::{Link, Timing, CONNECT_TIMEOUT};
use wire::{seq_of, Control, LogRecord, Null, Resume};

/// The keys share the hash tag `{sidecast}`, so a Redis Cluster serves too.
const LOG: &str = "{sidecast}:log";
const EPOCH: &str = "{sidecast}:epoch";
const CONTROL: &str = "{sidecast}:control";
/// The log is trimmed (approximately) to this many entries; local history
/// limits apply on top.
pub const LOG_MAXLEN: usize = 100_000;
/// How long a cross-replica request waits for the replicas' answers.
const FANOUT_WAIT: Duration = Duration::from_secs(2);
/// How long a command may take before its outcome is called unknown.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the log reader blocks in one `XREAD`, and how long a reply to
/// it may take (a blocking read must not be cut by a short timeout).
const READ_BLOCK_MS: usize = 2000;
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The commands' connection tries to reconnect once per use: a publish
/// is answered `503` at once rather than after a backoff.
const COMMAND_RETRIES: usize = 0;
/// The reader's connection retries with backoff (100 ms growing to 5 s,
/// about 16 s in all) before the reader starts over.
const READ_RETRIES: usize = 8;
/// The pause before the reader starts over after a failure: reconnecting
/// is the connection manager's (with its backoff), but an error reply
/// (Redis still loading its data, say) comes back at once.
const READ_PAUSE: Duration = Duration::from_millis(200);

/// Appends a batch atomically, honouring idempotency keys; returns the
/// epoch and the stream ids (comma-separated), or `{epoch, '', 'conflict',
/// key}` when a key was used before for other content (then nothing is
/// appended). A key's value is `id SHA1` (a request key's, `ids SHA1`), the
/// SHA1 of what it was first used for, so that a retry and a reuse can be
/// told apart on every replica alike.
///
/// ARGV: window ms, log max length, request key, a new epoch, then pairs
/// of (event key, stored event).
const APPEND: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  redis.call('SET', KEYS[2], ARGV[4])
  epoch = ARGV[4]
end
local function split(v)
  local sp = string.find(v, ' ', 1, true)
  if not sp then return v, nil end
  return string.sub(v, 1, sp - 1), string.sub(v, sp + 1)
end
local parts = {}
for i = 5, #ARGV, 2 do
  parts[#parts + 1] = ARGV[i] .. '\0' .. ARGV[i + 1]
end
local request_fp = redis.sha1hex(table.concat(parts, '\n'))
if ARGV[3] ~= '' then
  local prev = redis.call('GET', '{sidecast}:req:' .. ARGV[3])
  if prev then
    local ids, fp = split(prev)
    if fp and fp ~= request_fp then return {epoch, '', 'conflict', ARGV[3]} end
    return {epoch, ids}
  end
end
local seen = {}
for i = 5, #ARGV, 2 do
  local key = ARGV[i]
  if key ~= '' then
    local fp = redis.sha1hex(ARGV[i + 1])
    local known = seen[key]
    if not known then
      local v = redis.call('GET', '{sidecast}:idem:' .. key)
      if v then
        local _, vfp = split(v)
        known = vfp
      end
    end
    if known and known ~= fp then return {epoch, '', 'conflict', key} end
    seen[key] = fp
  end
end
local ids = {}
for i = 5, #ARGV, 2 do
  local key = ARGV[i]
  local id = false
  if key ~= '' then
    local v = redis.call('GET', '{sidecast}:idem:' .. key)
    if v then id = split(v) end
  end
  if not id then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[i + 1])
    if key ~= '' then
      redis.call('SET', '{sidecast}:idem:' .. key, id .. ' ' .. seen[key], 'PX', ARGV[1])
    end
  end
  ids[#ids + 1] = id
end
local joined = table.concat(ids, ',')
if ARGV[3] ~= '' then
  redis.call('SET', '{sidecast}:req:' .. ARGV[3], joined .. ' ' .. request_fp, 'PX', ARGV[1])
end
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

/// Why a cluster operation failed. Each says whether the operation may
/// have taken effect, because a publisher that is told "nothing was
/// published" will retry without thinking, and one that is not, must
/// retry with the same idempotency keys.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// Nothing was sent to Redis: certainly no effect.
    #[error("Redis is unreachable: {0}")]
    NotSent(#[source] RedisError),
    /// The request was sent and no answer came (a timeout, a connection
    /// lost mid-request): Redis may or may not have carried it out.
    #[error("Redis did not answer: {0}")]
    NoAnswer(#[source] NoAnswer),
    /// The events are in the log, but fewer Redis replicas than
    /// `wait_replicas` confirmed them in time.
    #[error("appended to the Redis log, but {acked} of the {wanted} Redis replicas asked for (wait_replicas) confirmed within 2s: not confirmed durable")]
    NotDurable { acked: Acked, wanted: u32 },
}

impl Unavailable {
    /// Whether the operation certainly had no effect.
    pub fn nothing_done(&self) -> bool {
        matches!(self, Unavailable::NotSent(_))
    }

    /// An error from a command already sent on the commands' connection:
    /// a refusal to connect is certain, anything else leaves the outcome
    /// open.
    fn after_send(e: RedisError) -> Unavailable {
        if e.is_connection_refusal() {
            Unavailable::NotSent(e)
        } else if e.is_timeout() {
            Unavailable::NoAnswer(NoAnswer::Timeout(COMMAND_TIMEOUT))
        } else {
            Unavailable::NoAnswer(NoAnswer::Lost(e))
        }
    }
}

/// How a request sent to Redis went unanswered.
#[derive(Debug, thiserror::Error)]
pub enum NoAnswer {
    #[error("no answer within {}s", .0.as_secs())]
    Timeout(Duration),
    #[error("{0}")]
    Lost(#[source] RedisError),
    #[error("unexpected answer from Redis: {0:?}")]
    Unexpected(Vec<String>),
}

/// How many Redis replicas confirmed a write (fewer than asked for).
#[derive(Debug)]
pub enum Acked {
    Count(i64),
    /// `WAIT` itself failed.
    Unknown(RedisError),
}

impl std::fmt::Display for Acked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Acked::Count(n) => write!(f, "{n}"),
            Acked::Unknown(e) => write!(f, "an unknown number (WAIT failed: {e})"),
        }
    }
}

/// Why a cluster publish was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// An idempotency key was used within the window for other content;
    /// nothing was appended.
    #[error("the idempotency key {0:?} was used within dedupe_window for different content")]
    KeyReused(String),
}

/// `[cluster] redis` is not a URL the Redis client takes.
#[derive(Debug, thiserror::Error)]
#[error("cluster.redis: {0}")]
pub struct BadUrl(RedisError);

/// Where the log reader is: the epoch it follows and the last id it read.
#[derive(Default)]
struct Position {
    epoch: Option<String>,
    last_id: Option<String>,
}

/// The list a replica files its answer to request `req` under.
fn reply_key(req: &str) -> String {
    format!("{{sidecast}}:reply:{req}")
}

pub struct Cluster {
    client: redis::Client,
    /// Appends, control requests and their answers.
    commands: Link,
    /// The log reader's own: its blocking `XREAD` would hold up every
    /// command queued behind it on a shared connection.
    reader: Link,
    connected: AtomicBool,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    wait_replicas: u32,
    append: redis::Script,
    bump_epoch: redis::Script,
}

impl Cluster {
    /// The cluster link, not yet connected (a Tokio runtime must be
    /// running).
    pub fn new(
        url: &str,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        wait_replicas: u32,
    ) -> Result<Arc<Cluster>, BadUrl> {
        let client = redis::Client::open(url).map_err(BadUrl)?;
        let link = |response, retries| {
            Link::new(client.clone(), Timing { response, retries }).map_err(BadUrl)
        };
        Ok(Arc::new(Cluster {
            commands: link(COMMAND_TIMEOUT, COMMAND_RETRIES)?,
            reader: link(READ_TIMEOUT, READ_RETRIES)?,
            client,
            connected: AtomicBool::new(false),
            hub,
            metrics,
            wait_replicas,
            append: redis::Script::new(APPEND),
            bump_epoch: redis::Script::new(BUMP_EPOCH),
        }))
    }

    /// Starts the link to Redis for the life of the process: the log
    /// reader (which fills local history first, then follows) and the
    /// control channel. The receiver resolves once history is filled.
    pub fn spawn_link(self: &Arc<Self>) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(self.clone().run(tx));
        tokio::spawn(self.clone().control_loop());
        rx
    }

    /// Whether the link to Redis is up (what `/readyz` reports).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::SeqCst);
        self.metrics.cluster_connected.set(i64::from(up));
    }

    /// Appends a batch to the log; the ids streams will carry. `202` only
    /// after this returns.
    pub async fn publish(
        &self,
        events: &[NewEvent],
        request_key: Option<&str>,
        window: Duration,
    ) -> Result<Vec<String>, PublishError> {
        let mut conn = self
            .commands
            .checked()
            .await
            .map_err(Unavailable::NotSent)?;
        let mut inv = self.append.key(LOG);
        inv.key(EPOCH)
            .arg(window.as_millis().max(1) as u64)
            .arg(LOG_MAXLEN)
            .arg(request_key.unwrap_or(""))
            .arg(new_epoch());
        for e in events {
            inv.arg(e.idempotency_key.as_deref().unwrap_or(""))
                .arg(serde_json::to_string(&LogRecord::of(e)).unwrap_or_default());
        }
        // From here the script may have reached Redis: a timeout or a lost
        // connection leaves the outcome unknown, never "nothing published".
        let answer: Vec<String> =
            match tokio::time::timeout(COMMAND_TIMEOUT, inv.invoke_async(&mut conn)).await {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => {
                    self.commands.failed(&e);
                    return Err(Unavailable::after_send(e).into());
                }
                Err(_) => {
                    self.commands.suspect();
                    return Err(Unavailable::NoAnswer(NoAnswer::Timeout(COMMAND_TIMEOUT)).into());
                }
            };
        let (epoch, joined) = match answer.as_slice() {
            [epoch, joined] => (epoch, joined),
            [_, _, what, key] if what == "conflict" => {
                return Err(PublishError::KeyReused(key.clone()))
            }
            _ => return Err(Unavailable::NoAnswer(NoAnswer::Unexpected(answer)).into()),
        };
        if self.wait_replicas > 0 {
            let acked: Result<i64, _> = redis::cmd("WAIT")
                .arg(self.wait_replicas)
                .arg(2000)
                .query_async(&mut conn)
                .await;
            let short = match acked {
                Ok(n) if n >= i64::from(self.wait_replicas) => None,
                Ok(n) => Some(Acked::Count(n)),
                Err(e) => {
                    self.commands.failed(&e);
                    Some(Acked::Unknown(e))
                }
            };
            if let Some(acked) = short {
                return Err(Unavailable::NotDurable {
                    acked,
                    wanted: self.wait_replicas,
                }
                .into());
            }
        }
        Ok(joined
            .split(',')
            .map(|id| format_id(epoch, seq_of(id).unwrap_or(0)))
            .collect())
    }

    fn ingest(&self, epoch: &str, entry: &StreamId) {
        let Some(seq) = seq_of(&entry.id) else { return };
        let Some(redis::Value::BulkString(raw)) = entry.map.get("e") else {
            return;
        };
        let Ok(record) = serde_json::from_slice::<LogRecord>(raw) else {
            tracing::warn!(id = %entry.id, "skipping a log entry that is not a sidecast event");
            return;
        };
        if let Some(new) = record.into_event() {
            self.hub.ingest(epoch, seq, &new);
        }
    }

    /// Reads the log forever: backfills local history at start (then
    /// signals `ready`), follows new entries, and after a failure resumes
    /// from the last id delivered — or starts a new epoch when Redis is
    /// behind what was delivered (data loss), which clients see as
    /// `sidecast.reset`, never as a wrong replay.
    pub async fn run(self: Arc<Self>, ready: tokio::sync::oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut position = Position::default();
        loop {
            let Err(e) = self.session(&mut position, &mut ready).await;
            // The commands' connection most likely went the same way: a
            // publish must not take a failure on it for a maybe. Marked
            // before `/readyz` says so, for whoever waits for that.
            self.commands.suspect();
            if self.is_connected() {
                tracing::warn!("lost Redis: {e}; reconnecting");
            }
            self.set_connected(false);
            self.reader.failed(&e);
            tokio::time::sleep(READ_PAUSE + Duration::from_millis(fastrand::u64(0..100))).await;
        }
    }

    /// One run of the reader on one connection: the epoch check every
    /// (re)connect needs, then reading until a command fails.
    async fn session(
        &self,
        position: &mut Position,
        ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<Infallible, RedisError> {
        let mut conn = self.reader.conn();
        let _: bool = conn.set_nx(EPOCH, new_epoch()).await?;
        let mut current: String = conn.get(EPOCH).await?;
        let newest: StreamRangeReply = conn.xrevrange_count(LOG, "+", "-", 1).await?;
        let newest = newest.ids.first().and_then(|e| seq_of(&e.id)).unwrap_or(0);
        let delivered = position.last_id.as_deref().and_then(seq_of).unwrap_or(0);
        match Resume::decide(position.epoch.as_deref(), delivered, &current, newest) {
            Resume::Follow => {}
            Resume::NewEpoch => {
                // One replica wins when several notice the loss at once;
                // the epoch in force comes back either way.
                current = self
                    .bump_epoch
                    .key(EPOCH)
                    .arg(&current)
                    .arg(new_epoch())
                    .invoke_async(&mut conn)
                    .await?;
                tracing::warn!("Redis holds less than was delivered: starting a new epoch");
                self.rebuild(position, &current);
            }
            Resume::Rebuild => self.rebuild(position, &current),
        }
        self.set_connected(true);
        tracing::info!("connected to Redis");
        let opts = StreamReadOptions::default()
            .block(READ_BLOCK_MS)
            .count(1000);
        loop {
            let from = position.last_id.clone().unwrap_or_else(|| "$".to_owned());
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
            position.last_id = entries.last().map(|e| e.id.clone());
            if entries.len() < 1000 {
                // Caught up with the log: local history is filled.
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
        }
    }

    /// Follows the data set of `epoch` from its start: local history is
    /// rebuilt from the log.
    fn rebuild(&self, position: &mut Position, epoch: &str) {
        position.last_id = Some("0".to_owned());
        position.epoch = Some(epoch.to_owned());
        self.hub.ingest_epoch(epoch);
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
            let Ok(control) = serde_json::from_str::<Control>(&payload) else {
                continue;
            };
            let n = self.answer(&control);
            let key = reply_key(control.req());
            let _: redis::RedisResult<()> = redis::pipe()
                .rpush(&key, n)
                .expire(&key, 10)
                .query_async(&mut self.commands.conn())
                .await;
        }
        Ok(())
    }

    /// What this replica answers to a request: the streams it closed or
    /// counted.
    fn answer(&self, control: &Control) -> usize {
        let topic = |t: &Option<String>| t.as_deref().and_then(|t| Topic::parse(t).ok());
        match control {
            Control::Disconnect {
                user,
                topic: t,
                reason,
                reconnect,
                ..
            } => self.hub.disconnect(
                user.as_deref(),
                topic(t).as_ref(),
                Close::Disconnect {
                    reason: reason.clone().unwrap_or_else(|| "disconnected".into()),
                    reconnect: reconnect.unwrap_or(true),
                },
            ),
            Control::Count { topic: t, .. } => topic(t)
                .and_then(|t| self.hub.topic_info(&t))
                .map_or(0, |i| i.streams),
        }
    }

    /// Sends a request to every replica (this one included) and sums their
    /// answers.
    async fn fanout(&self, request: impl FnOnce(String) -> Control) -> Result<usize, Unavailable> {
        let c = request(format!("{:016x}", fastrand::u64(..)));
        let mut conn = self
            .commands
            .checked()
            .await
            .map_err(Unavailable::NotSent)?;
        let receivers: usize = match conn
            .publish(CONTROL, serde_json::to_string(&c).unwrap_or_default())
            .await
        {
            Ok(n) => n,
            Err(e) => {
                self.commands.failed(&e);
                return Err(Unavailable::after_send(e));
            }
        };
        let key = reply_key(c.req());
        let deadline = tokio::time::Instant::now() + FANOUT_WAIT;
        let mut sum = 0usize;
        let mut got = 0;
        // The request is out: from here a failure leaves it open whether
        // replicas acted on it. The answers are awaited on a connection of
        // this request's own, which BLPOP blocks.
        let lost = |e| Unavailable::NoAnswer(NoAnswer::Lost(e));
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(FANOUT_WAIT + Duration::from_secs(2)));
        let mut blocking = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(lost)?;
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
                .map_err(lost)?;
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
        self.fanout(|req| Control::Disconnect {
            req,
            user: user.map(str::to_owned),
            topic: topic.map(|t| t.as_str().to_owned()),
            reason: Some(reason.to_owned()),
            reconnect: Some(reconnect),
        })
        .await
    }

    /// Streams open on `topic` across every replica.
    pub async fn cluster_streams(&self, topic: &Topic) -> Result<usize, Unavailable> {
        self.fanout(|req| Control::Count {
            req,
            user: Null,
            topic: Some(topic.as_str().to_owned()),
            reason: Null,
            reconnect: Null,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> RedisError {
        std::io::Error::from(kind).into()
    }

    #[test]
    fn a_failure_after_sending_is_not_published_only_when_refused() {
        let refused = Unavailable::after_send(io(std::io::ErrorKind::ConnectionRefused));
        assert!(refused.nothing_done(), "{refused}");
        let timeout = Unavailable::after_send(io(std::io::ErrorKind::TimedOut));
        assert!(!timeout.nothing_done());
        assert_eq!(
            timeout.to_string(),
            "Redis did not answer: no answer within 5s"
        );
        let lost = Unavailable::after_send(io(std::io::ErrorKind::BrokenPipe));
        assert!(
            matches!(lost, Unavailable::NoAnswer(NoAnswer::Lost(_))),
            "{lost}"
        );
    }

    #[test]
    fn not_durable_says_how_many_confirmed() {
        let short = Unavailable::NotDurable {
            acked: Acked::Count(0),
            wanted: 1,
        };
        assert!(!short.nothing_done());
        assert_eq!(
            short.to_string(),
            "appended to the Redis log, but 0 of the 1 Redis replicas asked for \
             (wait_replicas) confirmed within 2s: not confirmed durable"
        );
        let unknown = Acked::Unknown(io(std::io::ErrorKind::BrokenPipe));
        assert!(unknown
            .to_string()
            .starts_with("an unknown number (WAIT failed: "));
    }
}
