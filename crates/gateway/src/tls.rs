//! TLS on both sides of the gateway: the listener clients connect to
//! (rustls via tokio-rustls) and the client that reaches data nodes and
//! Sentinels (`belay_client::TlsClient`). Both are built from their files
//! into the config (`GatewayConfig::load_tls`), at start and on each
//! reload, so new certificates apply without a restart.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use belay_client::{provider, read_certs, read_key, read_roots, TlsClient, TlsFiles};
use tokio_rustls::TlsAcceptor;

use crate::config::GatewayConfig;

/// TLS flags of `belay gateway` (over the config file's keys of the same
/// names).
#[derive(Debug, clap::Args, Default, Clone)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Address of a TLS listener for clients, beside --listen (or alone
    /// with --listen none). Clients connect as to Redis over TLS, e.g.
    /// `redis-cli --tls --cacert ca.crt`.
    #[arg(long, env = "BELAY_TLS_LISTEN", value_name = "ADDR")]
    pub tls_listen: Option<String>,

    /// Certificate chain (PEM) the TLS listener presents. Read again on reload.
    #[arg(long, env = "BELAY_TLS_CERT_FILE", value_name = "PATH")]
    pub tls_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert-file.
    #[arg(long, env = "BELAY_TLS_KEY_FILE", value_name = "PATH")]
    pub tls_key_file: Option<PathBuf>,

    /// Require TLS clients to present a certificate signed by this CA (PEM),
    /// as Redis's `tls-auth-clients yes`. Without it, TLS clients need no
    /// certificate (they still log in with AUTH).
    #[arg(long, env = "BELAY_TLS_CA_FILE", value_name = "PATH")]
    pub tls_ca_file: Option<PathBuf>,

    /// Talk TLS to the data nodes and Sentinels (Redis's `tls-port`,
    /// `tls-replication yes`).
    #[arg(long, env = "BELAY_BACKEND_TLS")]
    pub backend_tls: bool,

    /// CA (PEM) that signed the nodes' and Sentinels' certificates.
    #[arg(long, env = "BELAY_BACKEND_TLS_CA_FILE", value_name = "PATH")]
    pub backend_tls_ca_file: Option<PathBuf>,

    /// Certificate (PEM) the gateway presents to nodes and Sentinels: Redis
    /// requires one unless configured with `tls-auth-clients no`.
    #[arg(long, env = "BELAY_BACKEND_TLS_CERT_FILE", value_name = "PATH")]
    pub backend_tls_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --backend-tls-cert-file.
    #[arg(long, env = "BELAY_BACKEND_TLS_KEY_FILE", value_name = "PATH")]
    pub backend_tls_key_file: Option<PathBuf>,

    /// Check every node's certificate against this name instead of the
    /// host Sentinel gives (as `redis-cli --sni`): for certificates without
    /// the nodes' IP addresses.
    #[arg(long, env = "BELAY_BACKEND_TLS_SERVER_NAME", value_name = "NAME")]
    pub backend_tls_server_name: Option<String>,
}

impl TlsArgs {
    /// Flags over the file's settings.
    pub fn apply(self, cfg: &mut GatewayConfig) {
        macro_rules! take_opt {
            ($($field:ident),*) => { $( if self.$field.is_some() { cfg.$field = self.$field; } )* };
        }
        take_opt!(
            tls_listen,
            tls_cert_file,
            tls_key_file,
            tls_ca_file,
            backend_tls_ca_file,
            backend_tls_cert_file,
            backend_tls_key_file,
            backend_tls_server_name
        );
        if self.backend_tls {
            cfg.backend_tls = true;
        }
    }
}

/// The TLS client for nodes and Sentinels, from `backend_tls_*`.
pub fn backend_client(cfg: &GatewayConfig) -> anyhow::Result<Option<TlsClient>> {
    if !cfg.backend_tls {
        return Ok(None);
    }
    let files = TlsFiles {
        ca: cfg.backend_tls_ca_file.clone(),
        cert: cfg.backend_tls_cert_file.clone(),
        key: cfg.backend_tls_key_file.clone(),
    };
    TlsClient::from_files(&files, cfg.backend_tls_server_name.as_deref())
        .map(Some)
        .context("cannot set up TLS to the nodes (--backend-tls-*)")
}

/// The TLS listener's acceptor, from `tls_*`: built at start and on every
/// reload (the files are read again even when their names did not change:
/// a rotated certificate keeps its path), used from the next handshake on.
pub fn server_acceptor(cfg: &GatewayConfig) -> anyhow::Result<Option<TlsAcceptor>> {
    if cfg.tls_listen.is_none() {
        return Ok(None);
    }
    acceptor(cfg).map(Some)
}

fn acceptor(cfg: &GatewayConfig) -> anyhow::Result<TlsAcceptor> {
    let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) else {
        anyhow::bail!("--tls-listen needs --tls-cert-file and --tls-key-file");
    };
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &cfg.tls_ca_file {
        Some(ca) => {
            let roots = read_roots(ca).context("--tls-ca-file")?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("cannot check client certificates with --tls-ca-file")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let certs = read_certs("certificate file", cert).context("--tls-cert-file")?;
    let key = read_key(key).context("--tls-key-file")?;
    let mut config = builder
        .with_single_cert(certs, key)
        .context("the TLS key does not fit the certificate (--tls-cert-file, --tls-key-file)")?;
    // Clients that announce a protocol (ALPN) get none chosen, as with Redis.
    config.alpn_protocols.clear();
    Ok(TlsAcceptor::from(Arc::new(config)))
}
