//! Access logs: the servo collects one line per connection (SSL listeners, and TCP listeners
//! from the dataplane's flow events: [`FlowRecord`]) or per request (HTTP/HTTPS listeners the
//! engine serves), in AWS's classic ELB format ([`entry`]), into files of `EmitInterval` (5 or
//! 60 minutes, aligned to the hour), and uploads each finished file to the load balancer's
//! `S3BucketName`/`S3BucketPrefix` under AWS's key layout ([`LogDestination::object_key`]),
//! through `elb-s3`.
//!
//! Nothing is lost silently. Lines go to a spool on disk (`<spool>/open/`, flushed every
//! second); a finished interval moves to `<spool>/ready/` and stays there until the upload
//! succeeds, retried with back-off while the endpoint is down, and across agent restarts (files
//! left in `open/` by a crash are finished at start). The spool is bounded (`max_spool_bytes`):
//! past it new lines are refused, counted in [`Stats::dropped_lines`] and logged.

pub mod entry;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};

pub use elb_s3::{S3Error, S3Settings, S3Writer};
pub use entry::{AccessLogEntry, FlowRecord, FormatLine, LogDestination, RequestLine, TlsInfo};

/// How the servo keeps and delivers access logs.
#[derive(Debug, Clone)]
pub struct AccessLogSettings {
    pub s3: S3Settings,
    pub spool_dir: PathBuf,
    pub max_spool_bytes: u64,
    /// The servo's address as it appears in the file names (`..._<ip>_<random>.log`).
    pub node_address: Ipv4Addr,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("access log spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub lines: AtomicU64,
    pub dropped_lines: AtomicU64,
    pub files_uploaded: AtomicU64,
    pub upload_failures: AtomicU64,
    pub spool_bytes: AtomicU64,
}

/// The destination and object key of a finished file, kept next to it in `ready/`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct ReadyMeta {
    bucket: String,
    key: String,
}

/// The interval file a load balancer is writing.
struct OpenFile {
    dest: LogDestination,
    interval_end: SystemTime,
    path: PathBuf,
    writer: BufWriter<File>,
}

struct Inner {
    /// Load balancer (the servo's name for it) -> where its logs go; absent: logging off.
    destinations: HashMap<String, LogDestination>,
    open: HashMap<String, OpenFile>,
    /// When the last "spool full" warning was logged.
    last_full_warning: Option<SystemTime>,
}

/// The servo's access log collector; cheap to share.
pub struct AccessLogs {
    settings: AccessLogSettings,
    inner: Mutex<Inner>,
    stats: Stats,
    sealed: Notify,
}

impl std::fmt::Debug for AccessLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLogs")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn file_size(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

impl AccessLogs {
    /// Opens the spool (creating its directories), finishes files a previous run left open,
    /// and counts what waits for upload.
    pub fn open(settings: AccessLogSettings) -> Result<Arc<Self>, SpoolError> {
        let open_dir = settings.spool_dir.join("open");
        let ready_dir = settings.spool_dir.join("ready");
        fs::create_dir_all(&open_dir).map_err(io_error(&open_dir))?;
        fs::create_dir_all(&ready_dir).map_err(io_error(&ready_dir))?;
        let logs = Arc::new(Self {
            settings,
            inner: Mutex::new(Inner {
                destinations: HashMap::new(),
                open: HashMap::new(),
                last_full_warning: None,
            }),
            stats: Stats::default(),
            sealed: Notify::new(),
        });
        logs.recover()?;
        Ok(logs)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files in `open/` from a run that ended without finishing them: each has a `.json`
    /// with its destination and interval end; they become ready files now.
    fn recover(&self) -> Result<(), SpoolError> {
        let open_dir = self.settings.spool_dir.join("open");
        let mut spooled = 0;
        for item in fs::read_dir(&open_dir).map_err(io_error(&open_dir))? {
            let path = item.map_err(io_error(&open_dir))?.path();
            if path.extension().is_some_and(|e| e == "log") {
                let meta_path = path.with_extension("json");
                let recovered = fs::read(&meta_path)
                    .ok()
                    .and_then(|m| serde_json::from_slice::<OpenMeta>(&m).ok());
                match recovered {
                    Some(meta) => {
                        self.finish(
                            &path,
                            &meta.dest,
                            UNIX_EPOCH + Duration::from_secs(meta.end),
                        )?;
                    }
                    None => {
                        tracing::warn!(file = %path.display(), "access log file without its description: left in place");
                    }
                }
            }
        }
        let ready_dir = self.settings.spool_dir.join("ready");
        for item in fs::read_dir(&ready_dir).map_err(io_error(&ready_dir))? {
            let path = item.map_err(io_error(&ready_dir))?.path();
            if path.extension().is_some_and(|e| e == "log") {
                spooled += file_size(&path);
            }
        }
        self.stats.spool_bytes.store(spooled, Ordering::Relaxed);
        Ok(())
    }

    /// Sets which load balancers log and where (the whole set; others stop logging: their
    /// open files are finished and still delivered).
    pub fn set_destinations(&self, destinations: HashMap<String, LogDestination>) {
        let mut inner = self.lock();
        let gone: Vec<String> = inner
            .open
            .iter()
            .filter(|(lb, f)| destinations.get(*lb) != Some(&f.dest))
            .map(|(lb, _)| lb.clone())
            .collect();
        for lb in gone {
            if let Some(file) = inner.open.remove(&lb) {
                self.seal(file);
            }
        }
        inner.destinations = destinations;
    }

    /// Whether load balancer `lb` logs now.
    pub fn is_logging(&self, lb: &str) -> bool {
        self.lock().destinations.contains_key(lb)
    }

    /// Records one line for load balancer `lb` (ignored when it does not log). Never blocks on
    /// the network: the line is appended to the open file's buffer (flushed every second), or
    /// dropped and counted when the spool is full. The engine's records and the dataplane's
    /// flow events ([`FlowRecord`]) come through here.
    pub fn record(&self, lb: &str, entry: &AccessLogEntry) {
        let now = SystemTime::now();
        let mut inner = self.lock();
        let Some(dest) = inner.destinations.get(lb).cloned() else {
            return;
        };
        let line = entry.format_line(&dest.load_balancer);
        let spooled = self.stats.spool_bytes.load(Ordering::Relaxed);
        if spooled + line.len() as u64 > self.settings.max_spool_bytes {
            self.stats.dropped_lines.fetch_add(1, Ordering::Relaxed);
            let warn = inner.last_full_warning.is_none_or(|t| {
                now.duration_since(t).unwrap_or_default() > Duration::from_secs(10)
            });
            if warn {
                inner.last_full_warning = Some(now);
                tracing::warn!(
                    spool = %self.settings.spool_dir.display(),
                    max_bytes = self.settings.max_spool_bytes,
                    dropped = self.stats.dropped_lines.load(Ordering::Relaxed),
                    "access log spool full (uploads failing?): dropping new lines"
                );
            }
            return;
        }
        let end = dest.interval_end(now);
        let stale = inner
            .open
            .get(lb)
            .is_some_and(|f| f.interval_end != end || f.dest != dest);
        if stale && let Some(file) = inner.open.remove(lb) {
            self.seal(file);
        }
        if !inner.open.contains_key(lb) {
            match self.create(&dest, end) {
                Ok(file) => {
                    inner.open.insert(lb.to_string(), file);
                }
                Err(e) => {
                    self.stats.dropped_lines.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "cannot open an access log file: line dropped");
                    return;
                }
            }
        }
        let file = inner.open.get_mut(lb).expect("inserted above");
        match file.writer.write_all(line.as_bytes()) {
            Ok(()) => {
                self.stats.lines.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .spool_bytes
                    .fetch_add(line.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.dropped_lines.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, file = %file.path.display(), "cannot write an access log line: dropped");
            }
        }
    }

    fn create(&self, dest: &LogDestination, end: SystemTime) -> Result<OpenFile, SpoolError> {
        let base = format!("{:012}-{}", unix_secs(end), random_suffix());
        let path = self
            .settings
            .spool_dir
            .join("open")
            .join(format!("{base}.log"));
        let meta = serde_json::to_vec(&OpenMeta {
            dest: dest.clone(),
            end: unix_secs(end),
        })
        .expect("plain data serialises");
        let meta_path = path.with_extension("json");
        fs::write(&meta_path, meta).map_err(io_error(&meta_path))?;
        let file = File::create(&path).map_err(io_error(&path))?;
        Ok(OpenFile {
            dest: dest.clone(),
            interval_end: end,
            path,
            writer: BufWriter::with_capacity(64 * 1024, file),
        })
    }

    /// Finishes an open file: flushed and moved to `ready/` (an empty one is removed: AWS
    /// writes no file for an interval without traffic).
    fn seal(&self, mut file: OpenFile) {
        if let Err(e) = file.writer.flush() {
            tracing::error!(error = %e, file = %file.path.display(), "cannot flush an access log file");
        }
        drop(file.writer);
        if let Err(e) = self.finish(&file.path, &file.dest, file.interval_end) {
            tracing::error!(error = %e, "cannot finish an access log file; it stays in the spool");
        }
        self.sealed.notify_one();
    }

    fn finish(
        &self,
        path: &Path,
        dest: &LogDestination,
        end: SystemTime,
    ) -> Result<(), SpoolError> {
        let meta_path = path.with_extension("json");
        if file_size(path) == 0 {
            let _ = fs::remove_file(path);
            let _ = fs::remove_file(&meta_path);
            return Ok(());
        }
        let random = random_suffix();
        let ready = ReadyMeta {
            bucket: dest.bucket.clone(),
            key: dest.object_key(end, self.settings.node_address, &random),
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(random_suffix);
        let target = self
            .settings
            .spool_dir
            .join("ready")
            .join(format!("{stem}.log"));
        let target_meta = target.with_extension("json");
        let meta = serde_json::to_vec(&ready).expect("plain data serialises");
        // Description first: a ready `.log` always has its `.json`.
        fs::write(&target_meta, meta).map_err(io_error(&target_meta))?;
        fs::rename(path, &target).map_err(io_error(path))?;
        let _ = fs::remove_file(&meta_path);
        Ok(())
    }

    /// Flushes open files to disk and finishes those whose interval has ended.
    pub fn tick(&self) {
        let now = SystemTime::now();
        let mut inner = self.lock();
        let ended: Vec<String> = inner
            .open
            .iter()
            .filter(|(_, f)| f.interval_end <= now)
            .map(|(lb, _)| lb.clone())
            .collect();
        for lb in ended {
            if let Some(file) = inner.open.remove(&lb) {
                self.seal(file);
            }
        }
        for file in inner.open.values_mut() {
            if let Err(e) = file.writer.flush() {
                tracing::error!(error = %e, file = %file.path.display(), "cannot flush an access log file");
            }
        }
    }

    /// Finishes every open file now (SIGUSR1, shutdown): its lines are delivered without
    /// waiting for the end of the interval. The file is named for the interval it belongs to.
    pub fn finish_all(&self) {
        let mut inner = self.lock();
        let all: Vec<String> = inner.open.keys().cloned().collect();
        for lb in all {
            if let Some(file) = inner.open.remove(&lb) {
                self.seal(file);
            }
        }
    }

    /// Ready files, oldest interval first.
    fn ready_files(&self) -> Vec<PathBuf> {
        let dir = self.settings.spool_dir.join("ready");
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|items| {
                items
                    .filter_map(|i| i.ok().map(|i| i.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "log"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Uploads every ready file once; returns how many remain (failed ones stay).
    pub async fn upload_ready(&self, writer: &S3Writer) -> usize {
        let mut remaining = 0;
        for path in self.ready_files() {
            let meta_path = path.with_extension("json");
            let meta = match fs::read(&meta_path)
                .ok()
                .and_then(|m| serde_json::from_slice::<ReadyMeta>(&m).ok())
            {
                Some(meta) => meta,
                None => {
                    tracing::error!(file = %path.display(), "ready access log file without a readable description: left in the spool");
                    remaining += 1;
                    continue;
                }
            };
            let body = match fs::read(&path) {
                Ok(body) => body,
                Err(e) => {
                    tracing::error!(error = %e, file = %path.display(), "cannot read a ready access log file");
                    remaining += 1;
                    continue;
                }
            };
            let size = body.len() as u64;
            match writer.put(&meta.bucket, &meta.key, body).await {
                Ok(()) => {
                    let _ = fs::remove_file(&path);
                    let _ = fs::remove_file(&meta_path);
                    self.stats.files_uploaded.fetch_add(1, Ordering::Relaxed);
                    self.stats.spool_bytes.fetch_sub(
                        size.min(self.stats.spool_bytes.load(Ordering::Relaxed)),
                        Ordering::Relaxed,
                    );
                    tracing::info!(bucket = %meta.bucket, key = %meta.key, bytes = size, "access log delivered");
                }
                Err(e) => {
                    self.stats.upload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, bucket = %meta.bucket, key = %meta.key, "access log upload failed; kept for retry");
                    // The endpoint is likely down: the rest waits for the next round.
                    return self.ready_files().len();
                }
            }
        }
        remaining
    }

    /// Ticks every second and uploads ready files, retrying with back-off (1 s to 60 s) while
    /// uploads fail, until `shutdown`; then finishes every open file and makes one last
    /// upload attempt (what fails stays in the spool for the next start).
    pub async fn run(self: Arc<Self>, writer: S3Writer, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut backoff = Duration::from_secs(1);
        let mut next_upload = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = self.sealed.notified() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
            self.tick();
            if tokio::time::Instant::now() >= next_upload {
                if self.upload_ready(&writer).await == 0 {
                    backoff = Duration::from_secs(1);
                    next_upload = tokio::time::Instant::now();
                } else {
                    next_upload = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
        self.finish_all();
        let left = self.upload_ready(&writer).await;
        if left > 0 {
            tracing::warn!(files = left, spool = %self.settings.spool_dir.display(), "access logs not yet delivered stay in the spool for the next start");
        }
    }
}

/// The description of an open file (for recovery after a crash).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct OpenMeta {
    dest: LogDestination,
    end: u64,
}
