//! `belay up --tls`: a private CA made for this lab, and the certificates
//! its processes use, in `<dir>/tls/` (0700, every file 0600).
//!
//! - `ca.crt` signs everything; made anew on every `up`, and its key is
//!   never written down, so nothing can sign another certificate later.
//! - `server.crt`/`server.key`: every data node, Sentinel and the gateway's
//!   TLS listener; its names are `localhost` and every address the lab
//!   binds, so clients check it against the address they dial.
//! - `client.crt`/`client.key`: what the gateway, the lab's own checks and
//!   a user's `redis-cli --cert/--key` show the nodes, which check client
//!   certificates (Redis's default `tls-auth-clients yes`).
//!
//! Both leaf certificates may serve either end: nodes present theirs when
//! they connect to a master or another Sentinel.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use belay_client::{TlsClient, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::secrets::{private_dir, write_private};

/// Where a lab's TLS files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabTls {
    pub dir: PathBuf,
}

impl LabTls {
    /// The files of a lab whose state dir is `state_dir`.
    pub fn in_state_dir(state_dir: &Path) -> LabTls {
        LabTls {
            dir: state_dir.join("tls"),
        }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// A new CA and both certificates, for `hosts` (IP addresses or names).
    pub fn generate(&self, hosts: &[String]) -> Result<()> {
        private_dir(&self.dir)?;
        let ca_key = KeyPair::generate().context("generating the lab CA's key")?;
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "belay lab CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).context("signing the lab CA")?;
        write_private(&self.ca(), &ca_cert.pem())?;
        for (name, cert, key) in [
            ("belay lab server", self.server_cert(), self.server_key()),
            ("belay lab client", self.client_cert(), self.client_key()),
        ] {
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, name);
            params.subject_alt_names = names(hosts)?;
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let leaf_key = KeyPair::generate().context("generating a TLS key")?;
            let leaf = params
                .signed_by(&leaf_key, &ca_cert, &ca_key)
                .with_context(|| format!("signing the {name} certificate"))?;
            write_private(&cert, &leaf.pem())?;
            write_private(&key, &leaf_key.serialize_pem())?;
        }
        Ok(())
    }

    /// How the lab's own checks (and tests) reach its nodes and Sentinels.
    pub fn client(&self) -> Result<TlsClient> {
        TlsClient::from_files(
            &TlsFiles {
                ca: Some(self.ca()),
                cert: Some(self.client_cert()),
                key: Some(self.client_key()),
            },
            None,
        )
        .with_context(|| format!("reading the lab's TLS files in {}", self.dir.display()))
    }
}

/// `localhost` and each host, as IP address or DNS names.
fn names(hosts: &[String]) -> Result<Vec<SanType>> {
    let mut out = vec![SanType::DnsName("localhost".try_into()?)];
    for host in hosts {
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.as_str().try_into()?),
        };
        if !out.contains(&san) {
            out.push(san);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn certificates_are_private_and_make_a_working_client() {
        let dir = tempfile::tempdir().unwrap();
        let tls = LabTls::in_state_dir(dir.path());
        tls.generate(&["127.0.0.1".into(), "127.0.0.2".into()])
            .unwrap();
        for f in [
            tls.ca(),
            tls.server_cert(),
            tls.server_key(),
            tls.client_cert(),
            tls.client_key(),
        ] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        let mode = std::fs::metadata(&tls.dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        tls.client().unwrap();
        // The CA's key is not kept.
        let files: Vec<_> = std::fs::read_dir(&tls.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files.len(), 5, "{files:?}");
    }
}
