//! The verifiers' decisions, handshake by handshake in memory: which client an agent
//! serves, which agent the controller accepts, and the words a refusal is told in.

use std::path::{Path, PathBuf};

use rcgen::{ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trust::pki::{self, Holder, Validity};
use trust::{ClientTls, ClientTlsFiles, Role, ServerTls, ServerTlsFiles};

fn month() -> Validity {
    Validity::days(30).expect("validity")
}

/// A fresh CA with its controller certificate, and an agent certificate for 127.0.0.2.
fn fleet() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    pki::init(dir.path(), &["127.0.0.1".into()], month(), month(), false).expect("init");
    pki::issue(
        dir.path(),
        &agent("127.0.0.2"),
        &dir.path().join("agent"),
        month(),
        false,
    )
    .expect("issue");
    dir
}

fn agent(host: &str) -> Holder {
    Holder::new(Role::Agent, vec![host.to_string()], None).expect("holder")
}

fn operator(name: &str) -> Holder {
    Holder::new(Role::Operator, Vec::new(), Some(name.to_string())).expect("holder")
}

/// A file of the controller's folder of the PKI in `dir`.
fn controller_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(pki::CONTROLLER_DIR).join(name)
}

/// A certificate this project never issues: the CA's signature, any usages and role.
fn odd_certificate(
    dir: &Path,
    name: &str,
    usages: Vec<ExtendedKeyUsagePurpose>,
    role: Option<Role>,
) -> (PathBuf, PathBuf) {
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(dir.join(pki::CA_KEY)).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(dir.join(pki::CA_CERT)).unwrap(),
        ca_key,
    )
    .unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    if let Some(role) = role {
        params
            .subject_alt_names
            .push(SanType::URI(role.uri().try_into().unwrap()));
    }
    params.extended_key_usages = usages;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

async fn agent_server(dir: &Path, cert: PathBuf, key: PathBuf) -> ServerTls {
    ServerTls::load(
        ServerTlsFiles {
            cert,
            key,
            client_ca: Some(dir.join(pki::CA_CERT)),
        },
        &[b"h2"],
    )
    .await
    .expect("server TLS")
}

/// The agent of `fleet()`, serving 127.0.0.2's certificate to the controller only.
async fn the_agent(dir: &Path) -> ServerTls {
    let agent = dir.join("agent");
    agent_server(dir, agent.join(pki::AGENT_CERT), agent.join(pki::AGENT_KEY)).await
}

/// A client of agents holding the controller's certificate.
async fn controller_client(dir: &Path) -> ClientTls {
    client(
        dir,
        Some((
            controller_file(dir, pki::CONTROLLER_CERT),
            controller_file(dir, pki::CONTROLLER_KEY),
        )),
    )
    .await
}

async fn client(dir: &Path, identity: Option<(PathBuf, PathBuf)>) -> ClientTls {
    ClientTls::load(
        ClientTlsFiles {
            ca: dir.join(pki::CA_CERT),
            identity,
        },
        Role::Agent,
    )
    .await
    .expect("client TLS")
}

/// One handshake and one byte each way, dialling `name`: the server's verdict and the
/// client's, in the words `trust::refusal` finds.
async fn handshake(
    server: &ServerTls,
    client: &ClientTls,
    name: &str,
) -> (Result<(), String>, Result<(), String>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server.config());
    let connector = tokio_rustls::TlsConnector::from(client.config());
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    let words = |e: std::io::Error| trust::refusal(&e).unwrap_or_else(|| e.to_string());
    let serve = async move {
        let mut stream = acceptor.accept(b).await.map_err(words)?;
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.map_err(words)?;
        stream.write_all(&byte).await.map_err(words)?;
        stream.flush().await.map_err(words)
    };
    let dial = async move {
        let mut stream = connector.connect(name, a).await.map_err(words)?;
        stream.write_all(b"x").await.map_err(words)?;
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.map_err(words)?;
        Ok(())
    };
    tokio::join!(serve, dial)
}

#[tokio::test]
async fn an_agent_serves_only_a_certificate_issued_for_the_controller() {
    let dir = fleet();
    let server = the_agent(dir.path()).await;

    let controller = controller_client(dir.path()).await;
    let (served, dialled) = handshake(&server, &controller, "127.0.0.2").await;
    assert_eq!((served, dialled), (Ok(()), Ok(())));

    // Client usage but an agent's role, or no role of ours: refused all the same.
    for (name, role) in [("agent-as-client", Some(Role::Agent)), ("roleless", None)] {
        let identity = odd_certificate(
            dir.path(),
            name,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            role,
        );
        let (served, dialled) = handshake(
            &server,
            &client(dir.path(), Some(identity)).await,
            "127.0.0.2",
        )
        .await;
        let refusal = served.expect_err("served a client not issued for the controller");
        assert!(refusal.contains("not for the controller"), "{refusal}");
        let told = dialled.expect_err("the client was not told");
        assert!(
            told.contains("the peer refused this side's certificate"),
            "{told}"
        );
    }
}

#[tokio::test]
async fn the_controller_names_what_an_agent_presented() {
    let dir = fleet();
    let server = the_agent(dir.path()).await;
    let controller = controller_client(dir.path()).await;

    let (_, dialled) = handshake(&server, &controller, "10.0.0.5").await;
    assert_eq!(
        dialled,
        Err("the agent at 10.0.0.5 presented a certificate for 127.0.0.2".to_string())
    );

    // The controller's own certificate serves too, but is not an agent's.
    let impostor = agent_server(
        dir.path(),
        controller_file(dir.path(), pki::CONTROLLER_CERT),
        controller_file(dir.path(), pki::CONTROLLER_KEY),
    )
    .await;
    let (_, dialled) = handshake(&impostor, &controller, "127.0.0.1").await;
    assert_eq!(
        dialled,
        Err("the agent at 127.0.0.1 presented a certificate issued for the controller, not for an agent".to_string())
    );

    let stranger = fleet();
    let (_, dialled) = handshake(&server, &client(stranger.path(), None).await, "127.0.0.2").await;
    assert_eq!(
        dialled,
        Err(
            "the agent at 127.0.0.2 presented a certificate not issued by this controller's CA"
                .to_string()
        )
    );
}

#[tokio::test]
async fn a_reload_that_fails_keeps_the_files_in_use() {
    let dir = fleet();
    let agent = dir.path().join("agent");
    let server = the_agent(dir.path()).await;
    std::fs::write(agent.join(pki::AGENT_KEY), "not a key").unwrap();
    let error = server.reload().await.expect_err("a broken key was loaded");
    assert!(error.to_string().contains("agent-key.pem"), "{error}");
    let controller = controller_client(dir.path()).await;
    let (served, dialled) = handshake(&server, &controller, "127.0.0.2").await;
    assert_eq!((served, dialled), (Ok(()), Ok(())));
}

#[test]
fn pki_refuses_what_could_never_be_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in ["not a host", "", "a/b"] {
        let error = pki::init(dir.path(), &[bad.to_string()], month(), month(), false)
            .expect_err("issued for a name no peer can be verified against");
        assert!(error.to_string().contains("--host"), "{error}");
    }
    assert!(pki::init(dir.path(), &[], month(), month(), false).is_err());
    assert!(Validity::days(0).is_err());
    assert!(
        !dir.path().join(pki::CA_CERT).exists(),
        "a refused init wrote files"
    );
}

#[test]
fn pki_issue_signs_only_with_a_real_ca_and_its_own_key() {
    let dir = fleet();
    let out = dir.path().join("out");
    let issue = || pki::issue(dir.path(), &agent("10.0.0.5"), &out, month(), true);

    let ca_key = std::fs::read(dir.path().join(pki::CA_KEY)).unwrap();
    std::fs::copy(
        controller_file(dir.path(), pki::CONTROLLER_KEY),
        dir.path().join(pki::CA_KEY),
    )
    .unwrap();
    let error = issue().expect_err("signed with a key that is not the CA's");
    assert!(
        error
            .to_string()
            .contains("is not the key of this certificate"),
        "{error}"
    );
    std::fs::write(dir.path().join(pki::CA_KEY), &ca_key).unwrap();

    let ca = std::fs::read(dir.path().join(pki::CA_CERT)).unwrap();
    std::fs::copy(
        controller_file(dir.path(), pki::CONTROLLER_CERT),
        dir.path().join(pki::CA_CERT),
    )
    .unwrap();
    std::fs::copy(
        controller_file(dir.path(), pki::CONTROLLER_KEY),
        dir.path().join(pki::CA_KEY),
    )
    .unwrap();
    let error = issue().expect_err("signed with a leaf certificate as the CA");
    assert!(
        error.to_string().contains("not a CA certificate"),
        "{error}"
    );
    assert!(
        !out.join(pki::AGENT_CERT).exists(),
        "a refused issue wrote files"
    );
    std::fs::write(dir.path().join(pki::CA_CERT), &ca).unwrap();
    std::fs::write(dir.path().join(pki::CA_KEY), &ca_key).unwrap();
    issue().expect("the real CA signs");
}

#[tokio::test]
async fn the_controller_refuses_to_start_with_an_agents_certificate() {
    let dir = fleet();
    let agent = dir.path().join("agent");
    let error = ClientTls::controller(ClientTlsFiles {
        ca: dir.path().join(pki::CA_CERT),
        identity: Some((agent.join(pki::AGENT_CERT), agent.join(pki::AGENT_KEY))),
    })
    .await
    .err()
    .expect("an agent's certificate taken as the controller's");
    assert!(
        error
            .to_string()
            .contains("was issued for an agent, not for the controller"),
        "{error}"
    );
}

#[tokio::test]
async fn a_reload_closes_open_connections_the_new_ca_refuses() {
    let dir = fleet();
    let server = the_agent(dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut incoming =
        trust::Incoming::new(listener, Some(server.clone()), trust::ConnLimits::default()).unwrap();
    // An echo server on the TLS connections it accepts.
    tokio::spawn(async move {
        while let Some((mut conn, _)) = incoming.accept().await {
            tokio::spawn(async move {
                let mut byte = [0u8];
                while conn.read_exact(&mut byte).await.is_ok() {
                    if conn.write_all(&byte).await.is_err() || conn.flush().await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let controller = controller_client(dir.path()).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.2".to_string()).unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(controller.config())
        .connect(name, tcp)
        .await
        .unwrap();
    let mut byte = [0u8];
    stream.write_all(b"a").await.unwrap();
    stream
        .read_exact(&mut byte)
        .await
        .expect("served before the reload");

    // A reload with the same CA keeps the connection; another CA closes it.
    server.reload().await.unwrap();
    stream.write_all(b"b").await.unwrap();
    stream
        .read_exact(&mut byte)
        .await
        .expect("served after a reload with the same CA");
    let other = fleet();
    std::fs::copy(
        other.path().join(pki::CA_CERT),
        dir.path().join(pki::CA_CERT),
    )
    .unwrap();
    server.reload().await.unwrap();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_exact(&mut byte),
    )
    .await;
    assert!(
        matches!(read, Ok(Err(_))),
        "the open connection survived a CA change: {read:?}"
    );
}

#[tokio::test]
async fn an_agent_serves_an_operator_whose_certificate_serves_no_one() {
    let dir = fleet();
    let server = the_agent(dir.path()).await;
    let alice = dir.path().join("alice");
    let written =
        pki::issue(dir.path(), &operator("alice"), &alice, month(), false).expect("issue");
    let names: Vec<_> = written.iter().map(|w| w.path.clone()).collect();
    assert_eq!(
        names,
        [
            alice.join(pki::OPERATOR_CERT),
            alice.join(pki::OPERATOR_KEY),
            alice.join(pki::CA_CERT)
        ]
    );
    let identity = (
        alice.join(pki::OPERATOR_CERT),
        alice.join(pki::OPERATOR_KEY),
    );
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&identity.0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(Role::of(&chain), Some(Role::Operator));
    let (served, dialled) = handshake(
        &server,
        &client(dir.path(), Some(identity.clone())).await,
        "127.0.0.2",
    )
    .await;
    assert_eq!(
        (served, dialled),
        (Ok(()), Ok(())),
        "the operator was refused"
    );

    // For client use only: an agent serving it is refused by the controller.
    let impostor = agent_server(dir.path(), identity.0, identity.1).await;
    let (_, dialled) =
        handshake(&impostor, &controller_client(dir.path()).await, "127.0.0.1").await;
    assert!(
        dialled.is_err(),
        "an operator's certificate served as an agent's"
    );
}

#[test]
fn pki_issue_renews_a_controller_certificate_in_place() {
    use std::os::unix::fs::MetadataExt;
    let dir = fleet();
    let folder = dir.path().join(pki::CONTROLLER_DIR);
    let cert = folder.join(pki::CONTROLLER_CERT);
    let key = folder.join(pki::CONTROLLER_KEY);
    let copy = folder.join(pki::CA_CERT);
    let holder = Holder::new(
        Role::Controller,
        vec!["127.0.0.1".into(), "ctl.example".into()],
        None,
    )
    .expect("holder");
    let before = std::fs::read(&cert).unwrap();
    let refused = pki::issue(dir.path(), &holder, &folder, month(), false)
        .expect_err("replaced without --force");
    assert!(refused.to_string().contains("--force"), "{refused}");
    assert_eq!(std::fs::read(&cert).unwrap(), before);

    // A CA change under way: the folder's CA file holds the new CA and this one. It is
    // kept as it is; and, as root, the files keep the owner the service user was given.
    let other = fleet();
    let bundle = [
        std::fs::read(other.path().join(pki::CA_CERT)).unwrap(),
        std::fs::read(dir.path().join(pki::CA_CERT)).unwrap(),
    ]
    .concat();
    std::fs::write(&copy, &bundle).unwrap();
    let root = nix::unistd::geteuid().is_root();
    if root {
        for file in [&cert, &key, &copy] {
            std::os::unix::fs::chown(file, Some(65534), Some(65534)).unwrap();
        }
    }
    let written = pki::issue(dir.path(), &holder, &folder, month(), true).expect("renewal");
    assert_eq!(written.len(), 2, "{written:?}");
    assert_ne!(std::fs::read(&cert).unwrap(), before);
    assert_eq!(std::fs::read(&copy).unwrap(), bundle);
    if root {
        for file in [&cert, &key] {
            let meta = std::fs::metadata(file).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                (65534, 65534),
                "{}",
                file.display()
            );
        }
    }
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(Role::of(&chain), Some(Role::Controller));
}

#[test]
fn pki_issue_refuses_flags_that_make_no_sense_for_the_role() {
    let hosts = || vec!["10.0.0.5".to_string()];
    for (role, hosts, name, words) in [
        (Role::Agent, vec![], None, "needs at least one --host"),
        (Role::Controller, vec![], None, "needs at least one --host"),
        (
            Role::Agent,
            hosts(),
            Some("alice"),
            "--name is for --role operator",
        ),
        (Role::Operator, hosts(), None, "takes no --host"),
        (
            Role::Operator,
            vec![],
            Some(" "),
            "must be 1 to 64 printable",
        ),
        (
            Role::Operator,
            vec![],
            Some("a\nb"),
            "must be 1 to 64 printable",
        ),
    ] {
        let error = Holder::new(role, hosts, name.map(String::from))
            .expect_err("a holder of flags that make no sense");
        assert!(error.to_string().contains(words), "{role:?}: {error}");
    }
    assert_eq!(
        Holder::new(Role::Operator, vec![], None).expect("default name"),
        Holder::Operator {
            name: pki::DEFAULT_OPERATOR_NAME.to_string()
        }
    );
}
