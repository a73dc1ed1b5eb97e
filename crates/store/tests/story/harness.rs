//! Fresh databases for the story: a temp SQLite file, or a PostgreSQL database made and dropped per test.

use std::path::PathBuf;
use std::sync::Arc;

use calbridge_store::{PgStore, SqliteStore, Store};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor};

pub enum Raw {
    Sqlite(SqliteStore),
    Pg(PgStore),
}

pub struct TestDb {
    pub store: Arc<dyn Store>,
    pub raw: Raw,
    /// Opens another store on the same database (as a second process or node would).
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(PathBuf),
    PgDatabase {
        admin: Box<PgConnectOptions>,
        name: String,
    },
}

impl TestDb {
    /// Runs raw SQL, bypassing the store API (to prove the database itself refuses some writes).
    pub async fn raw_execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match &self.raw {
            Raw::Sqlite(s) => s.pool().execute(sql).await.map(|r| r.rows_affected()),
            Raw::Pg(p) => p.pool().execute(sql).await.map(|r| r.rows_affected()),
        }
    }

    /// The first column of every row `sql` returns, as integers (NULL: `None`), bypassing the store.
    pub async fn raw_i64s(&self, sql: &str) -> Result<Vec<Option<i64>>, sqlx::Error> {
        use sqlx::Row;
        let rows: Vec<Option<i64>> = match &self.raw {
            Raw::Sqlite(s) => sqlx::query(sql)
                .fetch_all(s.pool())
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?,
            Raw::Pg(p) => sqlx::query(sql)
                .fetch_all(p.pool())
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?,
        };
        Ok(rows)
    }

    pub async fn second_store(&self) -> Arc<dyn Store> {
        calbridge_store::connect(&self.url)
            .await
            .expect("second connection")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::PgDatabase { admin, name } => {
                let admin = (**admin).clone();
                let name = name.clone();
                // Drop runs inside the test's runtime; do the async cleanup on a thread with its own.
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async move {
                        if let Ok(mut conn) = admin.connect().await {
                            let _ = conn
                                .execute(
                                    format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")
                                        .as_str(),
                                )
                                .await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

pub async fn sqlite() -> TestDb {
    sqlite_migrated_to(None).await
}

/// Which migrations a test database gets before the test: all of them through the store, or the
/// versions a filter keeps (to test a later one on older rows, or a database that missed one).
#[derive(Clone, Copy)]
pub enum Migrated {
    All,
    UpTo(i64),
    AllBut(&'static [i64]),
}

impl Migrated {
    fn keeps(self, version: i64) -> bool {
        match self {
            Migrated::All => true,
            Migrated::UpTo(last) => version <= last,
            Migrated::AllBut(skipped) => !skipped.contains(&version),
        }
    }

    /// `migrator` with only the migrations this keeps.
    fn filter(self, mut migrator: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
        let kept: Vec<_> = migrator
            .migrations
            .iter()
            .filter(|m| self.keeps(m.version))
            .cloned()
            .collect();
        migrator.migrations = kept.into();
        migrator
    }
}

/// A fresh SQLite database migrated up to `version` (`None`: all the way).
pub async fn sqlite_migrated_to(version: Option<i64>) -> TestDb {
    sqlite_migrated(version.map_or(Migrated::All, Migrated::UpTo)).await
}

/// A fresh SQLite database with the migrations `migrated` names.
pub async fn sqlite_migrated(migrated: Migrated) -> TestDb {
    let dir =
        std::env::temp_dir().join(format!("calbridge-store-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("calbridge.db").display());
    let store = SqliteStore::connect(&url).await.expect("open sqlite");
    match migrated {
        Migrated::All => store.migrate().await.expect("migrate sqlite"),
        _ => migrated
            .filter(sqlx::migrate!("../store/migrations/sqlite"))
            .run(store.pool())
            .await
            .expect("migrate sqlite"),
    }
    TestDb {
        store: Arc::new(store.clone()),
        raw: Raw::Sqlite(store),
        url,
        cleanup: Cleanup::Dir(dir),
    }
}

fn require_peers() -> bool {
    std::env::var("CALBRIDGE_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// `None` (with a printed notice) when PostgreSQL is unreachable and peers are not required.
pub async fn postgres() -> Option<TestDb> {
    postgres_migrated_to(None).await
}

/// A fresh PostgreSQL database migrated up to `version` (`None`: all the way).
pub async fn postgres_migrated_to(version: Option<i64>) -> Option<TestDb> {
    postgres_migrated(version.map_or(Migrated::All, Migrated::UpTo)).await
}

/// A fresh PostgreSQL database with the migrations `migrated` names.
pub async fn postgres_migrated(migrated: Migrated) -> Option<TestDb> {
    let admin_url = std::env::var("CALBRIDGE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin: PgConnectOptions = admin_url
        .parse()
        .expect("CALBRIDGE_TEST_POSTGRES_URL is not a PostgreSQL URL");
    let admin_pool = match PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(admin.clone())
        .await
    {
        Ok(pool) => pool,
        Err(err) => {
            if require_peers() {
                panic!(
                    "PostgreSQL at {admin_url} is required (CALBRIDGE_REQUIRE_PEERS=1) but unreachable: {err}"
                );
            }
            eprintln!("NOTICE: skipping PostgreSQL story test, {admin_url} unreachable: {err}");
            return None;
        }
    };
    let name = format!("calbridge_test_{}", uuid::Uuid::now_v7().simple());
    admin_pool
        .execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .expect("create test database");
    admin_pool.close().await;
    let options = admin.clone().database(&name);
    let store = PgStore::connect_with(options)
        .await
        .expect("connect test database");
    match migrated {
        Migrated::All => store.migrate().await.expect("migrate postgres"),
        _ => migrated
            .filter(sqlx::migrate!("../store/migrations/postgres"))
            .run(store.pool())
            .await
            .expect("migrate postgres"),
    }
    let url = {
        let (base, _) = admin_url.rsplit_once('/').expect("URL has a database path");
        format!("{base}/{name}")
    };
    Some(TestDb {
        store: Arc::new(store.clone()),
        raw: Raw::Pg(store),
        url,
        cleanup: Cleanup::PgDatabase {
            admin: Box::new(admin),
            name,
        },
    })
}
