//! The settings a running gateway can change: the current [`GatewayConfig`]
//! behind an `ArcSwap`, and the rule of what a reload may change.
//!
//! Readers never lock: a session takes the current settings once per turn
//! of its loop (a pointer comparison when nothing changed), discovery once
//! per round, the admin endpoint per request. A reload builds a whole new
//! config (file, then environment and flags, as at start), validates it,
//! keeps every setting that needs a restart at its running value (and says
//! which ones the file changed) and swaps it in: clients stay connected.
//!
//! TLS files are read again on every reload, even when their names did not
//! change (a rotated certificate keeps its path): the listener's acceptor
//! lives in the config, so the next handshake uses the new certificate, and
//! discovery hands the new client to every node's pool.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::GatewayConfig;

/// Builds the config anew, from where it came at start (the file, the
/// environment and flags captured then).
pub type ConfigSource = Box<dyn Fn() -> anyhow::Result<GatewayConfig> + Send + Sync>;

/// The running gateway's settings, swapped whole on reload.
pub struct LiveConfig {
    current: ArcSwap<GatewayConfig>,
    /// Where a reload reads from; `None` for an embedder's fixed config.
    source: Option<ConfigSource>,
    /// One reload at a time (SIGHUP and `POST /reload` may meet).
    reloading: Mutex<()>,
}

/// What a reload did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Reloaded {
    /// Settings now in effect with new values.
    pub applied: Vec<&'static str>,
    /// Settings the file (or flags) changed that only a restart (or an
    /// upgrade, `belay gateway --upgrade`) can apply: still at their
    /// running values.
    pub needs_restart: Vec<&'static str>,
}

/// Why a reload was refused; the running settings stay as they were.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this gateway was not started from a config it can read again (no --config, flags only?): nothing to reload")]
    NoSource,
    #[error("the new config was rejected, the running one is kept: {0:#}")]
    Rejected(anyhow::Error),
}

/// Settings that take effect on reload. Everything else is read once at
/// start (listeners, workers, limits a session keeps for its life).
macro_rules! reloadable {
    ($m:ident) => {
        $m!(
            sentinels,
            username,
            password,
            sentinel_username,
            sentinel_password,
            client_password,
            no_client_auth,
            admin_password,
            durable_writes,
            durable_timeout_ms,
            read_from,
            failover_hold_ms,
            max_replica_lag_ms,
            min_synced_replicas,
            write_guard_lag_ms,
            read_your_writes,
            commands,
            zone,
            node_zones,
            tls_cert_file,
            tls_key_file,
            tls_ca_file,
            backend_tls_ca_file,
            backend_tls_cert_file,
            backend_tls_key_file,
            backend_tls_server_name
        )
    };
}

/// Settings a running gateway keeps until it is restarted or upgraded.
macro_rules! restart_only {
    ($m:ident) => {
        $m!(
            listen,
            master_name,
            cluster,
            admin_listen,
            no_admin,
            metrics,
            request_timeout_ms,
            abandon_after_ms,
            auth_timeout_secs,
            poll_interval_ms,
            control_timeout_ms,
            threads,
            connections_per_node,
            max_clients,
            idle_timeout_secs,
            max_pipeline,
            client_write_timeout_secs,
            client_output_buffer_limit_normal,
            client_output_buffer_limit_pubsub,
            client_query_buffer_limit,
            max_bulk_len,
            max_inline_len,
            max_multibulk_len,
            upgrade_socket,
            drain_timeout_secs,
            tls_listen,
            backend_tls
        )
    };
}

impl LiveConfig {
    pub fn new(cfg: GatewayConfig, source: Option<ConfigSource>) -> LiveConfig {
        LiveConfig {
            current: ArcSwap::from_pointee(cfg),
            source,
            reloading: Mutex::new(()),
        }
    }

    /// The settings in effect now.
    pub fn load(&self) -> Arc<GatewayConfig> {
        self.current.load_full()
    }

    /// Replaces `held` with the settings in effect if they changed since
    /// it was taken: one atomic load and a pointer comparison otherwise.
    pub fn refresh(&self, held: &mut Arc<GatewayConfig>) -> bool {
        let now = self.current.load();
        if Arc::ptr_eq(&now, held) {
            return false;
        }
        *held = arc_swap::Guard::into_inner(now);
        true
    }

    /// Reads the config again from where it came at start and applies it.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let source = self.source.as_ref().ok_or(ReloadError::NoSource)?;
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let new = source().map_err(ReloadError::Rejected)?;
        self.apply(new)
    }

    /// Applies `new` (validated first): reloadable settings take effect,
    /// the others stay as they run and are named in `needs_restart`.
    pub fn apply(&self, mut new: GatewayConfig) -> Result<Reloaded, ReloadError> {
        new.validate().map_err(ReloadError::Rejected)?;
        let old = self.load();
        // Rounded as at start, for the running number of workers.
        let threads = std::mem::replace(&mut new.threads, old.threads);
        crate::server::normalize(&mut new);
        new.threads = threads;
        let mut out = Reloaded::default();
        macro_rules! applied {
            ($($f:ident),*) => { $( if old.$f != new.$f { out.applied.push(stringify!($f)); } )* };
        }
        macro_rules! kept {
            ($($f:ident),*) => { $( if old.$f != new.$f {
                out.needs_restart.push(stringify!($f));
                new.$f = old.$f.clone();
            } )* };
        }
        reloadable!(applied);
        restart_only!(kept);
        // What the running gateway holds must still be consistent (e.g. a
        // new durable timeout against the running request timeout).
        new.validate().map_err(ReloadError::Rejected)?;
        // The TLS files, read again whatever their names: a bad one keeps
        // the running settings, all of them.
        new.load_tls().map_err(ReloadError::Rejected)?;
        if new.tls_acceptor.is_some() || new.backend_tls_client.is_some() {
            out.applied.push("tls files (read again)");
        }
        if !out.applied.is_empty() {
            self.current.store(Arc::new(new));
        }
        Ok(out)
    }
}

/// Reloads `config` and logs the outcome the same way for SIGHUP and
/// `POST /reload`.
pub fn reload_and_log(config: &LiveConfig) -> Result<Reloaded, ReloadError> {
    let result = config.reload();
    match &result {
        Ok(r) => {
            if !r.needs_restart.is_empty() {
                tracing::warn!(
                    needs_restart = ?r.needs_restart,
                    "config reloaded, but these settings need a restart (or `belay gateway --upgrade`) and keep their running values"
                );
            }
            tracing::info!(applied = ?r.applied, "config reloaded");
        }
        Err(e) => tracing::error!("config reload refused: {e}"),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> GatewayConfig {
        GatewayConfig {
            sentinels: vec!["a:1".into()],
            ..GatewayConfig::default()
        }
    }

    /// Every field of the config is either reloadable or restart-only: a
    /// new field must be put in one list or the other.
    #[test]
    fn every_setting_is_classified() {
        let mut names = Vec::new();
        macro_rules! collect {
            ($($f:ident),*) => { $( names.push(stringify!($f)); )* };
        }
        reloadable!(collect);
        restart_only!(collect);
        let debug = format!("{:?}", base());
        // The Debug output names every field but those it leaves out.
        for field in debug
            .trim_start_matches("GatewayConfig { ")
            .split(", ")
            .filter_map(|kv| kv.split(':').next())
            .filter(|k| !k.is_empty() && !k.starts_with(".."))
        {
            assert!(names.contains(&field.trim()), "{field} is not classified");
        }
    }

    #[test]
    fn reloadable_settings_apply_and_the_others_are_kept_and_named() {
        let live = LiveConfig::new(base(), None);
        let before = live.load();
        let new = GatewayConfig {
            max_replica_lag_ms: 250,
            client_password: Some("new".into()),
            listen: "127.0.0.1:1".into(),
            threads: 4,
            ..base()
        };
        let r = live.apply(new).unwrap();
        assert_eq!(r.applied, vec!["client_password", "max_replica_lag_ms"]);
        assert_eq!(r.needs_restart, vec!["listen", "threads"]);
        let now = live.load();
        assert_eq!(now.max_replica_lag_ms, 250);
        assert_eq!(now.listen, before.listen);
        assert_eq!(now.threads, before.threads);
        let mut held = before.clone();
        assert!(live.refresh(&mut held));
        assert!(!live.refresh(&mut held));
    }

    #[test]
    fn an_invalid_config_is_refused_and_the_old_one_kept() {
        let live = LiveConfig::new(base(), None);
        let bad = GatewayConfig {
            sentinels: vec![],
            ..base()
        };
        let e = live.apply(bad).unwrap_err().to_string();
        assert!(e.contains("--sentinel"), "{e}");
        assert_eq!(live.load().sentinels, vec!["a:1".to_string()]);
        assert!(matches!(live.reload(), Err(ReloadError::NoSource)));
    }
}
