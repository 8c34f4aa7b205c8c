//! The persistent store: SQLite (embedded default) or PostgreSQL (several control replicas
//! sharing one database), through sqlx's `Any` driver so that every query is written once.
//!
//! Consistency rules:
//! - Every write transaction starts by bumping the single `config_version` row. On SQLite that
//!   first statement takes the write lock before anything is read, so a transaction never has
//!   to upgrade a read snapshot (which would fail with SQLITE_BUSY regardless of the busy
//!   timeout); on PostgreSQL the row lock serialises writers, so check-then-insert logic
//!   (quotas, duplicate listeners) is race-free. Unique constraints back the names anyway.
//!   The few write transactions that change nothing a servo is told (health and refusal
//!   reports) do not bump the version, but they too open with a write statement.
//! - After a commit the new version is published on a `watch` channel; a poller picks up
//!   versions committed by other processes (admin commands, other replicas). A servo long-poll
//!   waits on [`Store::subscribe`]. On PostgreSQL every bump also sends a NOTIFY on
//!   [`NOTIFY_CHANNEL`] (delivered at commit), which [`Store::follow_notifications`] turns into
//!   an immediate publish, so a change made through one replica wakes long-polls on the others
//!   in milliseconds rather than at the next poll.
//! - Every bump records what made it in `changes` (the API request id when there is one, see
//!   [`with_origin`]).

mod admin_lbs;
mod certs;
mod identity;
mod inventory;
mod lb;
pub mod schema;
mod security_groups;
mod servo;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Executor, Row};
use tokio::sync::watch;

pub use admin_lbs::LbFilter;
pub use certs::{CertificateDeletion, ServerCertificate};
pub use identity::{AccessKey, Account, Principal, ROOT_USER as ROOT_USER_NAME, User, UserPolicy};
pub use inventory::{InventoryInstance, Subnet, Zone};
pub use lb::LbPage;
pub use security_groups::{GroupOrigin, SecurityGroupRecord};
pub use servo::{
    AssignedLb, AssignmentChange, AssignmentChanges, AssignmentRow, DnsLookup, HealthUpdate,
    HealthUpdateOutcome, LbPlacement, PlacementState, RefusalOutcome, ServoConfigData, ServoInfo,
    ServoLb, ServoMetrics, ServoPlacement, ServoRecord, StateChange, is_live, servo_lb_name,
};

/// The PostgreSQL NOTIFY channel that carries each committed config version.
const NOTIFY_CHANNEL: &str = "elb_config_version";

/// What caused a write: recorded with its config version in `changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOrigin {
    /// An ELB API request, by its RequestId.
    Request(String),
    /// A servo request (health report), by servo id.
    Servo(String),
    /// The servo assignment task, with the newest API request made since its previous change
    /// (what most likely called for it: a new load balancer, zone or listener), so that one
    /// grep follows a request to the servos that got the load balancer.
    Assignment(Option<String>),
}

tokio::task_local! {
    static CHANGE_ORIGIN: ChangeOrigin;
}

/// Runs `fut` with every write it makes attributed to `origin`. A task-local rather than a
/// parameter: the API handlers reach the store through many helpers, and threading a request
/// id through each would touch all of them for what is bookkeeping.
pub async fn with_origin<F: Future>(origin: ChangeOrigin, fut: F) -> F::Output {
    CHANGE_ORIGIN.scope(origin, fut).await
}

fn current_origin() -> (Option<String>, String) {
    // Writes outside any scope come from `elb-control admin` (or tests).
    match CHANGE_ORIGIN.try_with(Clone::clone) {
        Ok(ChangeOrigin::Request(id)) => (Some(id), "api".to_string()),
        Ok(ChangeOrigin::Servo(id)) => (None, format!("servo:{id}")),
        Ok(ChangeOrigin::Assignment(request)) => (request, "assignment".to_string()),
        Err(_) => (None, "admin".to_string()),
    }
}

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database '{0}': use sqlite:PATH (or a plain file path) or postgres://USER@HOST:PORT/DB"
    )]
    BadUrl(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("schema migration {version} failed: {source}")]
    Migration {
        version: i64,
        #[source]
        source: sqlx::Error,
    },
    #[error("{what} '{name}' already exists")]
    AlreadyExists { what: &'static str, name: String },
    #[error("{what} '{name}' does not exist")]
    NotFound { what: &'static str, name: String },
    #[error("{what} '{name}' is in use by {}", users.join(", "))]
    InUse {
        what: &'static str,
        name: String,
        users: Vec<String>,
    },
    #[error("quota exceeded: at most {limit} {what}")]
    QuotaExceeded { what: &'static str, limit: i64 },
    #[error("corrupt data in table {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
}

pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// Cheap to clone; all clones share the pool and the version channel.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<StoreInner>,
}

#[derive(Debug)]
struct StoreInner {
    pool: AnyPool,
    backend: Backend,
    version: watch::Sender<u64>,
    /// The driver URL, for the PostgreSQL LISTEN connection (never logged: it may hold a
    /// password).
    url: String,
}

/// Turns `sqlite:PATH`, a plain path, or a `postgres://` URL into a driver URL.
pub fn parse_database_url(db: &str) -> Result<(Backend, String), StoreError> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        return Ok((Backend::Postgres, db.to_string()));
    }
    let path = db
        .strip_prefix("sqlite://")
        .or_else(|| db.strip_prefix("sqlite:"))
        .unwrap_or(db);
    if path.is_empty() || path.contains("://") || path.contains('?') || path.contains('#') {
        return Err(StoreError::BadUrl(db.to_string()));
    }
    // Relative paths are taken from the working directory now, not re-interpreted by the
    // URL parser (`sqlite://./x.db` would make `.` a host name).
    let absolute = match std::path::Path::new(path).is_absolute() {
        true => path.to_string(),
        false => match std::env::current_dir() {
            Ok(cwd) => cwd.join(path).to_string_lossy().into_owned(),
            Err(_) => return Err(StoreError::BadUrl(db.to_string())),
        },
    };
    // sqlx percent-decodes the file name; encode the one character that would change meaning.
    let encoded = absolute.replace('%', "%25");
    Ok((Backend::Sqlite, format!("sqlite://{encoded}?mode=rwc")))
}

/// A write transaction that has already bumped the config version.
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    version: i64,
}

impl WriteTx {
    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl Store {
    /// Connects, applies migrations, and reads the current config version.
    pub async fn open(db: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = parse_database_url(db)?;
        let options: AnyConnectOptions = url.parse()?;
        let url = url.clone();
        let pool = match backend {
            Backend::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            // WAL: readers never block the writer; FULL: a commit is on disk
                            // (WAL fsynced) before it is acknowledged.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = FULL").await?;
                            conn.execute("PRAGMA busy_timeout = 30000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await?
            }
        };
        migrate(&pool, backend).await?;
        let (version, _) = watch::channel(0);
        let store = Self {
            inner: Arc::new(StoreInner {
                pool,
                backend,
                version,
                url,
            }),
        };
        store.refresh_version().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// Receives the config version after every committed change (the hook a servo long-poll
    /// or the DNS server waits on).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    /// The latest config version this process knows of.
    pub fn config_version(&self) -> u64 {
        *self.inner.version.borrow()
    }

    fn publish(&self, version: i64) {
        let version = u64::try_from(version).unwrap_or(0);
        self.inner.version.send_if_modified(|current| {
            if version > *current {
                *current = version;
                true
            } else {
                false
            }
        });
    }

    /// Reads the committed version from the database and publishes it if newer: how changes
    /// made by other processes reach this one's subscribers.
    pub async fn refresh_version(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(self.pool())
            .await?;
        let version: i64 = row.try_get("version")?;
        self.publish(version);
        Ok(self.config_version())
    }

    /// Polls [`refresh_version`](Self::refresh_version) forever; spawn it next to a server.
    pub async fn poll_version(self, every: Duration) {
        let mut ticker = tokio::time::interval(every);
        loop {
            ticker.tick().await;
            if let Err(e) = self.refresh_version().await {
                tracing::warn!(error = %e, "could not read the config version");
            }
        }
    }

    /// Starts a write transaction (see the module notes for why the bump comes first). The
    /// new version is recorded in `changes` with the current [`ChangeOrigin`], and on
    /// PostgreSQL announced with NOTIFY (sent by the server only if the transaction commits).
    pub(crate) async fn write(&self) -> Result<WriteTx, StoreError> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "UPDATE config_version SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *tx)
        .await?;
        let version: i64 = row.try_get("version")?;
        let (request_id, origin) = current_origin();
        sqlx::query(
            "INSERT INTO changes (version, request_id, origin, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(version)
        .bind(request_id)
        .bind(origin)
        .bind(crate::timefmt::now_millis())
        .execute(&mut *tx)
        .await?;
        if self.backend() == Backend::Postgres {
            // Wrapped in a count: the Any driver cannot decode pg_notify's `void` result.
            sqlx::query("SELECT COUNT(*) AS n FROM (SELECT pg_notify($1, $2)) AS notified")
                .bind(NOTIFY_CHANNEL)
                .bind(version.to_string())
                .execute(&mut *tx)
                .await?;
        }
        Ok(WriteTx { tx, version })
    }

    /// SQL for "now" in milliseconds on the database's clock. Servo liveness is judged on
    /// one clock (PostgreSQL's for replicas sharing it), not on each replica's.
    pub(crate) fn now_sql(&self) -> &'static str {
        match self.backend() {
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        }
    }

    /// On PostgreSQL, listens for the NOTIFY sent with every version bump and publishes the
    /// version at once; reconnects with a back-off when the connection drops (the 1 s poll
    /// covers the gap). Returns at once on SQLite, where all writers of a server's changes
    /// are in its own process or reach it through the poll.
    pub async fn follow_notifications(self) {
        if self.backend() != Backend::Postgres {
            return;
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.listen_once().await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, retry_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "config change notifications interrupted");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn listen_once(&self) -> Result<(), StoreError> {
        let mut listener = sqlx::postgres::PgListener::connect(&self.inner.url).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        // Anything committed while not listening.
        self.refresh_version().await?;
        loop {
            // `try_recv` ends with `None` when the connection is lost, instead of reconnecting
            // silently and hiding that notifications may have been missed.
            let Some(note) = listener.try_recv().await? else {
                return Ok(());
            };
            match note.payload().parse::<i64>() {
                Ok(version) => self.publish(version),
                Err(_) => {
                    self.refresh_version().await?;
                }
            }
        }
    }

    pub(crate) async fn commit(&self, tx: WriteTx) -> Result<u64, StoreError> {
        let version = tx.version;
        tx.tx.commit().await?;
        self.publish(version);
        Ok(u64::try_from(version).unwrap_or(0))
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }
}

async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let create = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";
    if let Err(first) = pool.execute(create).await {
        // Two PostgreSQL replicas creating the table at the same instant: one loses the race
        // on the catalog's unique index; by now the table exists.
        tracing::debug!(error = %first, "retrying creation of schema_migrations");
        pool.execute(create).await?;
    }
    let lock = match backend {
        Backend::Postgres => "LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE",
        // A write statement as the first one takes SQLite's write lock (waiting on busy_timeout).
        Backend::Sqlite => "DELETE FROM schema_migrations WHERE version < 0",
    };
    for (version, statements) in schema::MIGRATIONS {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        tx.execute(lock).await?;
        let applied = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(*version)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if applied {
            tx.rollback().await?;
            continue;
        }
        for statement in *statements {
            tx.execute(*statement)
                .await
                .map_err(|source| StoreError::Migration {
                    version: *version,
                    source,
                })?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(crate::timefmt::now_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, "applied schema migration");
    }
    Ok(())
}

/// Random lower-case hex of `bytes` random bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    elb_sigv4::hex(&buf)
}

/// Fills `buf` from the OS's random source.
pub fn fill_random(buf: &mut [u8]) {
    // getrandom only fails when the OS has no entropy source at all; nothing sensible can
    // run without one (access keys would be guessable), so stop loudly.
    if let Err(e) = getrandom::fill(buf) {
        panic!("the operating system's random source failed: {e}");
    }
}

pub(crate) fn flag(value: bool) -> i64 {
    i64::from(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            parse_database_url("postgres://u@h/db").unwrap().0,
            Backend::Postgres
        );
        assert_eq!(
            parse_database_url("sqlite:/tmp/x.db").unwrap(),
            (Backend::Sqlite, "sqlite:///tmp/x.db?mode=rwc".to_string())
        );
        assert_eq!(
            parse_database_url("/tmp/a%b.db").unwrap().1,
            "sqlite:///tmp/a%25b.db?mode=rwc"
        );
        assert!(parse_database_url("mysql://x").is_err());
        assert!(parse_database_url("sqlite:").is_err());
    }
}
