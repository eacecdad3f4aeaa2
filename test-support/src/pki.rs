//! A test's own CA, as `ocp-controller pki init` and `pki issue` write it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use trust::Role;
use trust::pki::{self, Holder, Validity};

/// A CA and the controller's certificate for 127.0.0.1 in a temp dir, laid out as
/// `pki init` writes them (the controller's files in a folder of their own);
/// agents' and operators' certificates are issued into folders of it on demand.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        pki::init(
            dir.path(),
            &["127.0.0.1".to_string()],
            month(),
            month(),
            false,
        )
        .expect("pki init");
        TestPki { dir }
    }

    /// Where `pki init` wrote the CA, as `--dir` of `pki issue` takes it.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A file of the CA's: [`pki::CA_CERT`] or [`pki::CA_KEY`].
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The controller's folder, as `--pki-dir` takes it.
    pub fn controller_dir(&self) -> PathBuf {
        self.dir.path().join(pki::CONTROLLER_DIR)
    }

    /// A file of the controller's folder: [`pki::CONTROLLER_CERT`],
    /// [`pki::CONTROLLER_KEY`] or its copy of [`pki::CA_CERT`].
    pub fn controller_file(&self, name: &str) -> PathBuf {
        self.controller_dir().join(name)
    }

    /// What the controller dials agents with: this CA, and its own certificate.
    pub async fn controller_client(&self) -> trust::ClientTls {
        trust::ClientTls::load(
            trust::ClientTlsFiles {
                ca: self.file(pki::CA_CERT),
                identity: Some((
                    self.controller_file(pki::CONTROLLER_CERT),
                    self.controller_file(pki::CONTROLLER_KEY),
                )),
            },
            Role::Agent,
        )
        .await
        .expect("the controller's client TLS")
    }

    /// An agent certificate for `host`, valid `validity`, issued (again, if it was) into
    /// `agents/<host>`: that folder, which holds the CA's certificate too.
    pub fn issue_for(&self, host: &str, validity: Validity) -> PathBuf {
        let out = self.dir.path().join("agents").join(host);
        let holder = Holder::new(Role::Agent, vec![host.to_string()], None).expect("holder");
        pki::issue(self.path(), &holder, &out, validity, true).expect("pki issue");
        out
    }

    /// An agent certificate for `host`, valid a month.
    pub fn issue(&self, host: &str) -> PathBuf {
        self.issue_for(host, month())
    }

    /// An operator certificate for `name`, valid a month, in `operators/<name>`.
    pub fn issue_operator(&self, name: &str) -> PathBuf {
        let out = self.dir.path().join("operators").join(name);
        let holder =
            Holder::new(Role::Operator, Vec::new(), Some(name.to_string())).expect("holder");
        pki::issue(self.path(), &holder, &out, month(), true).expect("pki issue");
        out
    }

    /// `--tls-cert` and `--tls-key` of `ocp-controller`: both faces serve TLS with the
    /// controller's certificate.
    pub fn controller_flags(&self) -> Vec<OsString> {
        vec![
            "--tls-cert".into(),
            self.controller_file(pki::CONTROLLER_CERT).into(),
            "--tls-key".into(),
            self.controller_file(pki::CONTROLLER_KEY).into(),
        ]
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

/// Thirty days: long enough for any test, short as a real deployment's would not be.
pub fn month() -> Validity {
    Validity::days(30).expect("validity")
}
