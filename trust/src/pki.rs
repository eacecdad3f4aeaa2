//! The fleet's own CA, in-process: `ocp-controller pki init` makes the CA and the
//! controller's certificate, `pki issue` one certificate per agent, per further
//! controller or per operator. Keys are written 0600, and nothing that exists is
//! overwritten unless asked (`force`).
//!
//! `init` keeps the controller's files in a folder of their own beside the CA's, so
//! that the controller's service user is given that folder and never the CA key.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::PublicKeyData;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::role::Role;

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
/// The folder of the PKI, beside the CA's files, that `init` writes the controller's
/// certificate, key and a copy of `ca.pem` into: what `--pki-dir` names.
pub const CONTROLLER_DIR: &str = "controller";
pub const CONTROLLER_CERT: &str = "controller.pem";
pub const CONTROLLER_KEY: &str = "controller-key.pem";
pub const AGENT_CERT: &str = "agent.pem";
pub const AGENT_KEY: &str = "agent-key.pem";
pub const OPERATOR_CERT: &str = "operator.pem";
pub const OPERATOR_KEY: &str = "operator-key.pem";

/// An operator certificate's name when none is given.
pub const DEFAULT_OPERATOR_NAME: &str = "operator";
/// X.509's upper bound for a common name.
const MAX_NAME: usize = 64;

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
    #[error("a certificate for {0} (--role {name}) needs at least one --host: the names and addresses it is for", name = .0.name())]
    NoHost(Role),
    #[error(
        "--role operator takes no --host: an operator's certificate is for client use only; name its holder with --name"
    )]
    HostForOperator,
    #[error("--name is for --role operator; a certificate for {0} is named by its first --host")]
    NameForRole(Role),
    #[error("--name {0:?} must be 1 to {MAX_NAME} printable characters")]
    BadName(String),
    #[error("validity must be from 1 to {MAX_DAYS} days, got {0}")]
    BadValidity(i64),
    #[error("generating a certificate: {0}")]
    Generate(rcgen::Error),
}

impl From<rcgen::Error> for PkiError {
    fn from(error: rcgen::Error) -> PkiError {
        PkiError::Generate(error)
    }
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

/// Whom a certificate is issued for: its role, and what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// An agent, for the host's registered address and any other name of it.
    Agent { hosts: Vec<String> },
    /// A controller (a renewal, or another controller), for every name and address
    /// clients reach it at: it serves its faces with the certificate too.
    Controller { hosts: Vec<String> },
    /// A person calling agents with grpcurl, named in the certificate's common name.
    Operator { name: String },
}

impl Holder {
    /// The holder `pki issue`'s flags describe; refuses combinations that make no sense.
    pub fn new(role: Role, hosts: Vec<String>, name: Option<String>) -> Result<Holder, PkiError> {
        let holder = match (role, name) {
            (Role::Agent | Role::Controller, Some(_)) => {
                return Err(PkiError::NameForRole(role));
            }
            (Role::Agent, None) => Holder::Agent { hosts },
            (Role::Controller, None) => Holder::Controller { hosts },
            (Role::Operator, _) if !hosts.is_empty() => return Err(PkiError::HostForOperator),
            (Role::Operator, name) => Holder::Operator {
                name: name.unwrap_or_else(|| DEFAULT_OPERATOR_NAME.to_string()),
            },
        };
        holder.check()?;
        Ok(holder)
    }

    /// Refuses what no certificate can be issued for: no host, a host no peer could
    /// match, a name that is empty, too long or holds control characters.
    fn check(&self) -> Result<(), PkiError> {
        match self {
            Holder::Agent { hosts } | Holder::Controller { hosts } => {
                if hosts.is_empty() {
                    return Err(PkiError::NoHost(self.role()));
                }
                hosts.iter().try_for_each(|host| san(host).map(drop))
            }
            Holder::Operator { name } => {
                let printable = name.chars().all(|c| !c.is_control());
                if name.trim().is_empty() || name.chars().count() > MAX_NAME || !printable {
                    return Err(PkiError::BadName(name.clone()));
                }
                Ok(())
            }
        }
    }

    pub fn role(&self) -> Role {
        match self {
            Holder::Agent { .. } => Role::Agent,
            Holder::Controller { .. } => Role::Controller,
            Holder::Operator { .. } => Role::Operator,
        }
    }

    /// The certificate's and the key's file names.
    pub fn files(&self) -> (&'static str, &'static str) {
        match self {
            Holder::Agent { .. } => (AGENT_CERT, AGENT_KEY),
            Holder::Controller { .. } => (CONTROLLER_CERT, CONTROLLER_KEY),
            Holder::Operator { .. } => (OPERATOR_CERT, OPERATOR_KEY),
        }
    }

    /// What the certificate names: its host names and addresses, or the operator's name.
    pub fn names(&self) -> Vec<String> {
        match self {
            Holder::Agent { hosts } | Holder::Controller { hosts } => hosts.clone(),
            Holder::Operator { name } => vec![name.clone()],
        }
    }

    /// The first host, or the operator's name; `check` made sure there is one.
    fn common_name(&self) -> &str {
        match self {
            Holder::Agent { hosts } | Holder::Controller { hosts } => {
                hosts.first().map_or("", String::as_str)
            }
            Holder::Operator { name } => name,
        }
    }

    /// The certificate's SANs: every host, then the role.
    fn subject_alt_names(&self) -> Result<Vec<SanType>, PkiError> {
        let hosts: &[String] = match self {
            Holder::Agent { hosts } | Holder::Controller { hosts } => hosts,
            Holder::Operator { .. } => &[],
        };
        let mut sans = hosts
            .iter()
            .map(|host| san(host))
            .collect::<Result<Vec<_>, _>>()?;
        sans.push(SanType::URI(self.role().uri().try_into()?));
        Ok(sans)
    }

    fn what(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            Holder::Agent { .. } => (
                "agent certificate",
                "agent key",
                "CA certificate (the agent's --tls-client-ca)",
            ),
            Holder::Controller { .. } => (
                "controller certificate",
                "controller key",
                "CA certificate (the controller's, in its --pki-dir)",
            ),
            Holder::Operator { .. } => (
                "operator certificate",
                "operator key",
                "CA certificate (grpcurl's -cacert)",
            ),
        }
    }
}

/// One file written, and what it is, for the command's report.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub what: &'static str,
}

/// Writes the CA into `dir` and the controller's certificate for `hosts` into
/// `dir/controller` (with a copy of the CA certificate): the service user is given that
/// folder, and `dir` stays root's, traversable (0755) so that the folder can be reached,
/// with the CA key 0600.
pub fn init(
    dir: &Path,
    hosts: &[String],
    ca_validity: Validity,
    validity: Validity,
    force: bool,
) -> Result<Vec<Written>, PkiError> {
    let controller = Holder::new(Role::Controller, hosts.to_vec(), None)?;
    let controller_dir = dir.join(CONTROLLER_DIR);
    let (ca_path, ca_key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let mut checked = vec![ca_path.clone(), ca_key_path.clone()];
    checked
        .extend([CONTROLLER_CERT, CONTROLLER_KEY, CA_CERT].map(|file| controller_dir.join(file)));
    refuse_existing(&checked, force)?;

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
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = signed(
        &controller,
        &issuer,
        &ca_pem,
        &controller_dir,
        validity,
        true,
    )?;

    create_dir(dir, 0o755)?;
    create_dir(&controller_dir, 0o700)?;
    let mut files = vec![
        File::public(ca_path, ca_pem, "CA certificate: every agent trusts it"),
        File::secret(
            ca_key_path,
            issuer.key().serialize_pem(),
            "CA key: root's alone, it signs every certificate",
        ),
    ];
    files.extend(leaf);
    write_all(files)
}

/// Writes a certificate for `holder` into `out`, signed by the CA in `dir`, and a copy
/// of the CA certificate there, so `out` is all its holder needs.
pub fn issue(
    dir: &Path,
    holder: &Holder,
    out: &Path,
    validity: Validity,
    force: bool,
) -> Result<Vec<Written>, PkiError> {
    holder.check()?;
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
    let files = signed(holder, &issuer, &ca_pem, out, validity, force)?;
    create_dir(out, 0o700)?;
    write_all(files)
}

/// A new key and certificate for `holder` signed by `issuer`, and the CA's copy, as
/// files of `out` to write; refused if they exist and `force` is not given.
fn signed(
    holder: &Holder,
    issuer: &Issuer<'static, KeyPair>,
    ca_pem: &str,
    out: &Path,
    validity: Validity,
    force: bool,
) -> Result<Vec<File>, PkiError> {
    let (cert_file, key_file) = holder.files();
    let cert_path = out.join(cert_file);
    let key_path = out.join(key_file);
    let ca_copy = out.join(CA_CERT);
    // The CA copy is kept when it already holds this CA, alone or in a bundle with
    // others (a CA change under way): issuing again into the same folder, or into the
    // PKI folder itself, leaves it as it is.
    let keep_ca = std::fs::read(&ca_copy).is_ok_and(|existing| holds(&existing, ca_pem));
    let mut checked = vec![cert_path.clone(), key_path.clone()];
    if !keep_ca {
        checked.push(ca_copy.clone());
    }
    refuse_existing(&checked, force)?;

    let key = KeyPair::generate()?;
    let cert = leaf(holder, validity)?.signed_by(&key, issuer)?;
    let (cert_what, key_what, ca_what) = holder.what();
    let mut files = vec![
        File::public(cert_path, cert.pem(), cert_what),
        File::secret(key_path, key.serialize_pem(), key_what),
    ];
    if !keep_ca {
        files.push(File::public(ca_copy, ca_pem.to_string(), ca_what));
    }
    Ok(files)
}

/// Whether the PEM file `existing` holds the certificate of `ca_pem`.
fn holds(existing: &[u8], ca_pem: &str) -> bool {
    let Ok(ca) = CertificateDer::from_pem_slice(ca_pem.as_bytes()) else {
        return false;
    };
    CertificateDer::pem_slice_iter(existing).any(|cert| cert.is_ok_and(|cert| cert == ca))
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

/// A host as a SAN: what rustls will match the certificate against, so nothing is
/// issued that could never be verified.
fn san(host: &str) -> Result<SanType, PkiError> {
    match ServerName::try_from(host) {
        Ok(ServerName::IpAddress(ip)) => Ok(SanType::IpAddress(ip.into())),
        Ok(ServerName::DnsName(dns)) => dns
            .as_ref()
            .to_string()
            .try_into()
            .map(SanType::DnsName)
            .map_err(|_| PkiError::BadHost(host.to_string())),
        _ => Err(PkiError::BadHost(host.to_string())),
    }
}

fn leaf(holder: &Holder, validity: Validity) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(holder.common_name());
    params.subject_alt_names = holder.subject_alt_names()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // The controller dials agents and serves its faces; an agent only serves, so its
    // certificate is refused as a client by any TLS stack, before the role is read;
    // an operator only calls, so no client can be fooled into taking it for a server.
    params.extended_key_usages = match holder.role() {
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
    Ok(params)
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

/// Makes `dir` (and any missing parent) with `mode`, and gives an existing `dir` that
/// mode too, whatever the umask: the PKI folder must be traversable by the service
/// user, the folders holding keys by their owner only.
fn create_dir(dir: &Path, mode: u32) -> Result<(), PkiError> {
    let err = |error| PkiError::Write {
        path: dir.to_owned(),
        error,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(err)?;
    let current = std::fs::metadata(dir).map_err(err)?.mode() & 0o7777;
    if current != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    Ok(())
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
/// replaced without its key). A file replaced keeps its owner and group, so that a
/// controller certificate renewed by root in the folder of the controller's service
/// user stays readable by that user.
fn write_all(files: Vec<File>) -> Result<Vec<Written>, PkiError> {
    let staged = files.iter().try_for_each(|file| {
        let tmp = file.staging();
        let err = |error| PkiError::Write {
            path: tmp.clone(),
            error,
        };
        let _ = std::fs::remove_file(&tmp);
        let mode = if file.secret { 0o600 } else { 0o644 };
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(err)?;
        // The umask may have taken bits from a certificate everyone is meant to read.
        out.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(err)?;
        if let Ok(old) = std::fs::symlink_metadata(&file.path) {
            let new = out.metadata().map_err(err)?;
            if (old.uid(), old.gid()) != (new.uid(), new.gid()) {
                std::os::unix::fs::fchown(&out, Some(old.uid()), Some(old.gid())).map_err(err)?;
            }
        }
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
