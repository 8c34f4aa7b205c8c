//! The servo service as `elb-servo run` runs it, as a library function tests can start too:
//! reads the configuration file, in control mode starts the control client from the
//! configuration saved last, and runs the agent until `shutdown`; each message on `reload`
//! re-reads the file (the binary sends one per SIGHUP), each one on `flush_access_logs` finishes
//! the open access log files (SIGUSR1).

use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use super::{
    AgentError, ConfigUpdate, ControlVersion, Hooks, RunOptions,
    control::{self, ControlOptions, Credentials},
};
use crate::config::{ConfigError, ConfigFile};

/// How to reach control (control mode).
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// Base URL of control, e.g. `http://10.0.0.2:8773`.
    pub url: String,
    /// The servo's credentials file (JSON from `elb-control admin servo create`).
    pub credentials: PathBuf,
}

/// What `elb-servo run` is asked to do.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The configuration file (TOML).
    pub config: PathBuf,
    /// Drop pinned state first (established flows are lost).
    pub reset: bool,
    /// The servo's zone, overriding the file's.
    pub zone: Option<String>,
    /// Take the load balancers from control.
    pub control: Option<ControlSettings>,
}

/// Why the service could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The credentials file is unusable.
    #[error("credentials: {0}")]
    Credentials(String),
    /// Control mode needs a zone and no load balancers in the file.
    #[error("{0}")]
    ControlMode(String),
    /// The agent stopped with an error.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

fn load(path: &Path, zone: &Option<String>) -> Result<ConfigFile, ConfigError> {
    let mut file = ConfigFile::load(path)?;
    if zone.is_some() {
        file.settings.zone.clone_from(zone);
    }
    Ok(file)
}

/// Runs the servo until `shutdown` turns true.
pub async fn serve(
    options: ServiceOptions,
    mut reload: mpsc::Receiver<()>,
    flush_access_logs: mpsc::Receiver<()>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServiceError> {
    let file = load(&options.config, &options.zone)?;
    let mut initial = ConfigUpdate {
        settings: file.settings.clone(),
        load_balancers: Some(file.load_balancers.clone()),
        origin: format!("file {}", options.config.display()),
        control: None,
    };
    let mut control_run = None;
    if let Some(c) = &options.control {
        let credentials = Credentials::load(&c.credentials).map_err(ServiceError::Credentials)?;
        let http = control::http_client(&c.url, &credentials).map_err(ServiceError::ControlMode)?;
        if file.settings.zone.is_none() {
            return Err(ServiceError::ControlMode(format!(
                "control mode needs the servo's zone (--zone or `zone` in {})",
                options.config.display()
            )));
        }
        if !file.load_balancers.is_empty() {
            return Err(ServiceError::ControlMode(format!(
                "in control mode the load balancers come from control: remove [[LoadBalancers]] from {}",
                options.config.display()
            )));
        }
        let state_file = PathBuf::from(&file.settings.state_dir)
            .join(format!("{}.last-config.json", credentials.servo_id));
        let saved = control::load_state(&state_file);
        if let Some(saved) = &saved {
            info!(
                version = saved.version,
                load_balancers = saved.load_balancers.len(),
                "starting from the configuration last received from control"
            );
            initial.load_balancers = Some(control::decode_document(saved));
            initial.origin = format!("saved control version {}", saved.version);
            initial.control = Some(ControlVersion {
                version: saved.version,
                request_ids: saved.request_ids.clone(),
            });
        }
        control_run = Some((
            ControlOptions {
                url: c.url.clone(),
                http,
                credentials,
                state_file,
                long_poll_secs: 25,
            },
            saved.map(|s| s.version),
        ));
    }

    let (updates_tx, updates) = mpsc::channel(4);
    let path = options.config.clone();
    let zone = options.zone.clone();
    let in_control_mode = options.control.is_some();
    let reload_tx = updates_tx.clone();
    let mut reload_stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = control::stopped(&mut reload_stop) => break,
                got = reload.recv() => {
                    if got.is_none() {
                        break;
                    }
                    info!(file = %path.display(), "reloading the configuration");
                    match load(&path, &zone) {
                        Ok(file) => {
                            let update = ConfigUpdate {
                                settings: file.settings,
                                // In control mode the file holds only the servo's settings.
                                load_balancers: (!in_control_mode).then_some(file.load_balancers),
                                origin: "SIGHUP".into(),
                                control: None,
                            };
                            let _ = reload_tx.send(update).await;
                        }
                        Err(e) => error!(error = %e, "configuration rejected; keeping the running one"),
                    }
                }
            }
        }
    });

    let mut hooks = Hooks {
        flush_access_logs: Some(flush_access_logs),
        ..Hooks::default()
    };
    if let Some((opts, version)) = control_run {
        let (status_tx, status_rx) = watch::channel(Default::default());
        let (metrics_tx, metrics_rx) = watch::channel(Vec::new());
        hooks.status = Some(status_tx);
        hooks.metrics = Some(metrics_tx);
        tokio::spawn(control::run(
            file.settings.clone(),
            opts,
            version,
            updates_tx,
            control::Reports {
                status: status_rx,
                metrics: metrics_rx,
            },
            shutdown.clone(),
        ));
    }
    super::run(
        initial,
        updates,
        RunOptions {
            reset: options.reset,
            sweep_interval: None,
        },
        hooks,
        shutdown,
    )
    .await?;
    Ok(())
}
