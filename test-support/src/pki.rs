//! A test's own CA, as `ocp-controller pki init` and `pki issue` write it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use trust::pki::{self, Validity};

/// A CA and the controller's certificate for 127.0.0.1 in a temp dir; agents'
/// certificates are issued into folders of it on demand.
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

    /// Where `pki init` wrote, as `--pki-dir` of `pki issue` takes it.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A file `pki init` wrote: [`pki::CA_CERT`], [`pki::CONTROLLER_CERT`]...
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An agent certificate for `host`, valid `validity`, issued (again, if it was) into
    /// `agents/<host>`: that folder, which holds the CA's certificate too.
    pub fn issue_for(&self, host: &str, validity: Validity) -> PathBuf {
        let out = self.dir.path().join("agents").join(host);
        pki::issue(self.path(), &[host.to_string()], &out, validity, true).expect("pki issue");
        out
    }

    /// An agent certificate for `host`, valid a month.
    pub fn issue(&self, host: &str) -> PathBuf {
        self.issue_for(host, month())
    }

    /// `--tls-cert` and `--tls-key` of `ocp-controller`: both faces serve TLS with the
    /// controller's certificate.
    pub fn controller_flags(&self) -> Vec<OsString> {
        vec![
            "--tls-cert".into(),
            self.file(pki::CONTROLLER_CERT).into(),
            "--tls-key".into(),
            self.file(pki::CONTROLLER_KEY).into(),
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
