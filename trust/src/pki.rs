//! The fleet's own CA, in-process: `ocp-controller pki init` makes the CA and the
//! controller's certificate, `pki issue` one certificate per agent. Keys are written
//! 0600, and nothing that exists is overwritten unless asked (`force`).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::PublicKeyData;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

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
    // The causes below are in the messages, not `source`s: reports are one line.
    #[error("writing {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} does not exist; run `ocp-controller pki init --dir {}` first", path.display(), dir.display())]
    NoCa { path: PathBuf, dir: PathBuf },
    #[error("reading {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} or its key is not a CA this tool can sign with: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("--host {0:?} is neither an IP address nor a DNS name")]
    BadHost(String),
    #[error("at least one --host is needed: the names and addresses the certificate is for")]
    NoHost,
    #[error("validity must be from 1 to {MAX_DAYS} days, got {0}")]
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

/// A hundred years: far past any sane rotation, and well inside X.509's dates.
pub const MAX_DAYS: i64 = 36_500;

impl Validity {
    /// From an hour ago (clocks of a fleet are never quite together) for `days`.
    pub fn days(days: i64) -> Result<Validity, PkiError> {
        if !(1..=MAX_DAYS).contains(&days) {
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
    // Named for its moment of birth: two fleets' CAs never share a name, so a peer of
    // the other fleet is refused as "unknown issuer", not as a bad signature.
    let born = OffsetDateTime::now_utc();
    ca.distinguished_name = name(&format!(
        "OCP fleet CA {}{:09}",
        born.unix_timestamp(),
        born.nanosecond()
    ));
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
    write_all(vec![
        File::public(
            ca_path,
            ca_cert.pem(),
            "CA certificate: every agent trusts it",
        ),
        File::secret(
            ca_key_path,
            issuer.key().serialize_pem(),
            "CA key: keep it here, it signs every certificate",
        ),
        File::public(cert_path, cert.pem(), "controller certificate"),
        File::secret(key_path, key.serialize_pem(), "controller key"),
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
        std::fs::read_to_string(&path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => PkiError::NoCa {
                path,
                dir: dir.to_owned(),
            },
            _ => PkiError::Read { path, error },
        })
    };
    let ca_pem = read(CA_CERT)?;
    let ca_key_pem = read(CA_KEY)?;
    let issuer = load_issuer(dir, &ca_pem, &ca_key_pem)?;

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
    let mut files = vec![
        File::public(cert_path, cert.pem(), "agent certificate"),
        File::secret(key_path, key.serialize_pem(), "agent key"),
    ];
    if !same_ca {
        files.push(File::public(
            ca_copy,
            ca_pem,
            "CA certificate (the agent's --tls-client-ca)",
        ));
    }
    write_all(files)
}

/// The CA in `dir`, checked to be one: a CA certificate whose key is the one given.
/// rcgen would sign with any key under any name, and what it signed would then be
/// refused by every peer, far from the mistake.
fn load_issuer(
    dir: &Path,
    ca_pem: &str,
    ca_key_pem: &str,
) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let bad_ca = |reason: String| PkiError::BadCa {
        path: dir.join(CA_CERT),
        reason,
    };
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| bad_ca(format!("{CA_KEY}: {e}")))?;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| bad_ca(e.to_string()))?;
    let (_, parsed) = X509Certificate::from_der(der.as_ref()).map_err(|e| bad_ca(e.to_string()))?;
    let is_ca = parsed
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|constraints| constraints.value.ca);
    if !is_ca {
        return Err(bad_ca("it is not a CA certificate".to_string()));
    }
    if parsed.public_key().raw != ca_key.subject_public_key_info().as_slice() {
        return Err(bad_ca(format!(
            "{CA_KEY} is not the key of this certificate"
        )));
    }
    if parsed.validity().not_after.timestamp() < OffsetDateTime::now_utc().unix_timestamp() {
        return Err(bad_ca(
            "the CA has expired; make a new one with `pki init`".to_string(),
        ));
    }
    Issuer::from_ca_cert_der(&der, ca_key).map_err(|e| bad_ca(e.to_string()))
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
    // certificate is refused as a client by any TLS stack, before the role is read;
    // an operator only calls, so no client can be fooled into taking it for a server.
    params.extended_key_usages = match role {
        Role::Controller => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Agent => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Role::Operator => vec![ExtendedKeyUsagePurpose::ClientAuth],
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

/// Folders made here hold keys: only their owner may look inside.
fn create_dir(dir: &Path) -> Result<(), PkiError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| PkiError::Write {
            path: dir.to_owned(),
            error,
        })
}

/// One file to write.
struct File {
    path: PathBuf,
    contents: String,
    secret: bool,
    what: &'static str,
}

impl File {
    fn public(path: PathBuf, contents: String, what: &'static str) -> File {
        File {
            path,
            contents,
            secret: false,
            what,
        }
    }

    fn secret(path: PathBuf, contents: String, what: &'static str) -> File {
        File {
            path,
            contents,
            secret: true,
            what,
        }
    }

    fn staging(&self) -> PathBuf {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        PathBuf::from(tmp)
    }
}

/// Writes every file beside its target first, then renames them all over their
/// targets: a key is never readable by others, not even for a moment, and a failure
/// before the renames leaves every old file as it was (a certificate is never
/// replaced without its key).
fn write_all(files: Vec<File>) -> Result<Vec<Written>, PkiError> {
    let staged = files.iter().try_for_each(|file| {
        let tmp = file.staging();
        let err = |error| PkiError::Write {
            path: tmp.clone(),
            error,
        };
        let _ = std::fs::remove_file(&tmp);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if file.secret { 0o600 } else { 0o644 })
            .open(&tmp)
            .map_err(err)?;
        out.write_all(file.contents.as_bytes()).map_err(err)?;
        out.sync_all().map_err(err)
    });
    if let Err(e) = staged {
        for file in &files {
            let _ = std::fs::remove_file(file.staging());
        }
        return Err(e);
    }
    files
        .into_iter()
        .map(|file| {
            std::fs::rename(file.staging(), &file.path).map_err(|error| PkiError::Write {
                path: file.path.clone(),
                error,
            })?;
            Ok(Written {
                path: file.path,
                what: file.what,
            })
        })
        .collect()
}
