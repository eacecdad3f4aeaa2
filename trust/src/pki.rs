//! The fleet's own CA, in-process: `ocp-controller pki init` makes the CA and the
//! controller's certificate, `pki issue` one certificate per agent. Keys are written
//! 0600, and nothing that exists is overwritten unless asked (`force`).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::ServerName;
use time::{Duration, OffsetDateTime};

use crate::role::Role;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const CONTROLLER_CERT: &str = "controller.pem";
pub const CONTROLLER_KEY: &str = "controller-key.pem";
pub const AGENT_CERT: &str = "agent.pem";
pub const AGENT_KEY: &str = "agent-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{} already exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {}: {source}; run `ocp-controller pki init --dir {}` first", path.display(), dir.display())]
    NoCa {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{} or its key is not a CA this tool can sign with: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("--host {0:?} is neither an IP address nor a DNS name")]
    BadHost(String),
    #[error("at least one --host is needed: the names and addresses the certificate is for")]
    NoHost,
    #[error("validity must be at least one day, got {0}")]
    BadValidity(i64),
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// How long what is issued stays valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks of a fleet are never quite together) for `days`.
    pub fn days(days: i64) -> Result<Validity, PkiError> {
        if days < 1 {
            return Err(PkiError::BadValidity(days));
        }
        let now = OffsetDateTime::now_utc();
        Ok(Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        })
    }
}

/// One file written, and what it is, for the command's report.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub what: &'static str,
}

/// Writes the CA and the controller's certificate into `dir`.
pub fn init(
    dir: &Path,
    hosts: &[String],
    ca_validity: Validity,
    validity: Validity,
    force: bool,
) -> Result<Vec<Written>, PkiError> {
    let sans = subject_alt_names(hosts, Role::Controller)?;
    let files = [CA_CERT, CA_KEY, CONTROLLER_CERT, CONTROLLER_KEY].map(|f| dir.join(f));
    refuse_existing(&files, force)?;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = name("OCP fleet CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = ca_validity.not_before;
    ca.not_after = ca_validity.not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let cert = leaf(hosts, sans, Role::Controller, validity).signed_by(&key, &issuer)?;

    create_dir(dir)?;
    let [ca_path, ca_key_path, cert_path, key_path] = files;
    Ok(vec![
        write(
            ca_path,
            &ca_cert.pem(),
            false,
            "CA certificate: every agent trusts it",
        )?,
        write(
            ca_key_path,
            &issuer.key().serialize_pem(),
            true,
            "CA key: keep it here, it signs every certificate",
        )?,
        write(cert_path, &cert.pem(), false, "controller certificate")?,
        write(key_path, &key.serialize_pem(), true, "controller key")?,
    ])
}

/// Writes a certificate for one agent into `out`, signed by the CA in `dir`, and a
/// copy of the CA certificate there, so `out` is all a host needs.
pub fn issue(
    dir: &Path,
    hosts: &[String],
    out: &Path,
    validity: Validity,
    force: bool,
) -> Result<Vec<Written>, PkiError> {
    let sans = subject_alt_names(hosts, Role::Agent)?;
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path).map_err(|source| PkiError::NoCa {
            path,
            dir: dir.to_owned(),
            source,
        })
    };
    let ca_pem = read(CA_CERT)?;
    let ca_key_pem = read(CA_KEY)?;
    let bad_ca = |e: rcgen::Error| PkiError::BadCa {
        path: dir.join(CA_CERT),
        reason: e.to_string(),
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(bad_ca)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(bad_ca)?;

    let cert_path = out.join(AGENT_CERT);
    let key_path = out.join(AGENT_KEY);
    let ca_copy = out.join(CA_CERT);
    // The CA copy is refused only when it differs: issuing a second time into the same
    // folder with --force, or into the PKI folder itself, keeps it as it is.
    let same_ca = std::fs::read_to_string(&ca_copy).is_ok_and(|existing| existing == ca_pem);
    let mut checked = vec![cert_path.clone(), key_path.clone()];
    if !same_ca {
        checked.push(ca_copy.clone());
    }
    refuse_existing(&checked, force)?;

    let key = KeyPair::generate()?;
    let cert = leaf(hosts, sans, Role::Agent, validity).signed_by(&key, &issuer)?;
    create_dir(out)?;
    let mut written = vec![
        write(cert_path, &cert.pem(), false, "agent certificate")?,
        write(key_path, &key.serialize_pem(), true, "agent key")?,
    ];
    if !same_ca {
        written.push(write(
            ca_copy,
            &ca_pem,
            false,
            "CA certificate (the agent's --tls-client-ca)",
        )?);
    }
    Ok(written)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "OCP");
    name.push(DnType::CommonName, common_name);
    name
}

fn subject_alt_names(hosts: &[String], role: Role) -> Result<Vec<SanType>, PkiError> {
    if hosts.is_empty() {
        return Err(PkiError::NoHost);
    }
    let mut sans = hosts
        .iter()
        .map(|host| {
            // What rustls will match the certificate against, so nothing is issued that
            // could never be verified.
            match ServerName::try_from(host.as_str()) {
                Ok(ServerName::IpAddress(ip)) => Ok(SanType::IpAddress(ip.into())),
                Ok(ServerName::DnsName(dns)) => dns
                    .as_ref()
                    .to_string()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| PkiError::BadHost(host.clone())),
                _ => Err(PkiError::BadHost(host.clone())),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    sans.push(SanType::URI(role.uri().try_into()?));
    Ok(sans)
}

fn leaf(hosts: &[String], sans: Vec<SanType>, role: Role, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&hosts[0]);
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // The controller dials agents and serves its faces; an agent only serves, so its
    // certificate is refused as a client by any TLS stack, before the role is read.
    params.extended_key_usages = match role {
        Role::Controller => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Agent => vec![ExtendedKeyUsagePurpose::ServerAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params
}

fn refuse_existing(paths: &[PathBuf], force: bool) -> Result<(), PkiError> {
    if force {
        return Ok(());
    }
    match paths.iter().find(|p| p.exists()) {
        Some(path) => Err(PkiError::Exists(path.clone())),
        None => Ok(()),
    }
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })
}

/// Writes beside the target and renames over it, so a key is never readable by
/// others, not even for a moment, and a replaced file is replaced whole.
fn write(
    path: PathBuf,
    contents: &str,
    secret: bool,
    what: &'static str,
) -> Result<Written, PkiError> {
    let err = |source| PkiError::Write {
        path: path.clone(),
        source,
    };
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(Written { path, what })
}
