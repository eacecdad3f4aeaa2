//! The stores every store test runs against: SQLite always, and PostgreSQL when one
//! answers at `OCP_TEST_POSTGRES_URL` (default: the local `test` database). CI sets
//! `OCP_REQUIRE_POSTGRES=1` so a missing server fails there instead of skipping.

use controller::store::Store;

pub struct TestStore {
    pub name: &'static str,
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    /// (server url, database) of a PostgreSQL database made for this test.
    postgres: Option<(String, String)>,
}

impl Drop for TestStore {
    /// Drops the test's PostgreSQL database, so test runs leave the server as they found it.
    fn drop(&mut self) {
        let Some((base, name)) = self.postgres.take() else {
            return;
        };
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut admin = sqlx::AnyConnection::connect(&base).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop a test database");
        }
    }
}

impl TestStore {
    /// The url of the PostgreSQL database, for a test that needs a connection of its
    /// own (another controller's transaction, say); `None` on SQLite.
    pub fn postgres_url(&self) -> Option<String> {
        let (base, name) = self.postgres.as_ref()?;
        let (prefix, _) = base.rsplit_once('/')?;
        Some(format!("{prefix}/{name}"))
    }
}

pub async fn test_stores() -> Vec<TestStore> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Store::connect(&Store::sqlite_url(dir.path()))
        .await
        .expect("sqlite store");
    let mut stores = vec![TestStore {
        name: "sqlite",
        store: sqlite,
        _dir: Some(dir),
        postgres: None,
    }];
    match fresh_postgres().await {
        Ok((store, postgres)) => stores.push(TestStore {
            name: "postgres",
            store,
            _dir: None,
            postgres: Some(postgres),
        }),
        Err(e) if std::env::var("OCP_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("PostgreSQL is required (OCP_REQUIRE_POSTGRES=1) but unusable: {e}")
        }
        Err(e) => eprintln!("skipping PostgreSQL: {e}"),
    }
    stores
}

/// A new, empty database per test, so tests run in parallel without seeing each other.
async fn fresh_postgres() -> Result<(Store, (String, String)), String> {
    use sqlx::Connection;
    let base = std::env::var("OCP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    sqlx::any::install_default_drivers();
    let mut admin = sqlx::AnyConnection::connect(&base)
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    let name = format!("ocp_test_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .map_err(|e| format!("creating {name}: {e}"))?;
    let url = match base.rsplit_once('/') {
        Some((prefix, _)) => format!("{prefix}/{name}"),
        None => return Err(format!("cannot derive a database url from {base}")),
    };
    let store = Store::connect(&url).await.map_err(|e| e.to_string())?;
    Ok((store, (base, name)))
}
