//! Transactions that cost no round trips of their own: `BEGIN` goes out
//! with the first statement and `COMMIT` with the last writes (pipelined:
//! sent together, run in order by the server).

use async_trait::async_trait;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row, Statement};

/// What the storage operations need from a connection or a transaction.
#[async_trait]
pub(crate) trait Conn: Sync {
    async fn prepare_cached(&self, sql: &str) -> Result<Statement, Error>;
    async fn query(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error>;
    async fn query_opt(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error>;
    async fn execute(&self, stmt: &Statement, params: &[&(dyn ToSql + Sync)])
        -> Result<u64, Error>;
    async fn batch_execute(&self, sql: &str) -> Result<(), Error>;
}

#[async_trait]
impl Conn for deadpool_postgres::Client {
    async fn prepare_cached(&self, sql: &str) -> Result<Statement, Error> {
        deadpool_postgres::ClientWrapper::prepare_cached(self, sql).await
    }
    async fn query(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        tokio_postgres::Client::query(self, stmt, params).await
    }
    async fn query_opt(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        tokio_postgres::Client::query_opt(self, stmt, params).await
    }
    async fn execute(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        tokio_postgres::Client::execute(self, stmt, params).await
    }
    async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        tokio_postgres::Client::batch_execute(self, sql).await
    }
}

/// A write of a pipelined batch.
pub(crate) type Write<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// A transaction on a pooled connection. A connection left inside an
/// unfinished transaction (the caller was dropped midway) is closed
/// rather than returned to the pool.
pub(crate) struct Tx {
    client: Option<deadpool_postgres::Client>,
    begun: AtomicBool,
    done: AtomicBool,
}

impl Tx {
    pub(crate) fn new(client: deadpool_postgres::Client) -> Self {
        Tx {
            client: Some(client),
            begun: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    fn client(&self) -> &deadpool_postgres::Client {
        self.client
            .as_ref()
            .expect("the connection is held until drop")
    }

    /// Runs `f`, preceded by `BEGIN` in the same round trip if it is the
    /// transaction's first statement.
    async fn begin_with<T>(
        &self,
        f: impl Future<Output = Result<T, Error>> + Send,
    ) -> Result<T, Error> {
        if self.begun.swap(true, Ordering::SeqCst) {
            return f.await;
        }
        let begin = tokio_postgres::Client::batch_execute(self.client(), "BEGIN");
        let ((), value) = futures::future::try_join(begin, f).await?;
        Ok(value)
    }

    /// Whether the transaction was committed.
    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Sends `writes` and `COMMIT` together; the server runs them in order
    /// (a failed write makes the `COMMIT` a rollback, and its error is
    /// returned).
    pub(crate) async fn commit_with(&self, mut writes: Vec<Write<'_>>) -> Result<(), Error> {
        if !self.begun.load(Ordering::SeqCst) && writes.is_empty() {
            self.done.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let client = self.client();
        writes.push(Box::pin(tokio_postgres::Client::batch_execute(
            client, "COMMIT",
        )));
        if !self.begun.swap(true, Ordering::SeqCst) {
            writes.insert(
                0,
                Box::pin(tokio_postgres::Client::batch_execute(client, "BEGIN")),
            );
        }
        futures::future::try_join_all(writes).await?;
        self.done.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Ends the transaction without committing (after an error).
    pub(crate) async fn rollback(&self) {
        if self.begun.load(Ordering::SeqCst)
            && !self.done.load(Ordering::SeqCst)
            && tokio_postgres::Client::batch_execute(self.client(), "ROLLBACK")
                .await
                .is_ok()
        {
            self.done.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.begun.load(Ordering::SeqCst) && !self.done.load(Ordering::SeqCst) {
            if let Some(client) = self.client.take() {
                // Out of the pool; dropping it closes the connection, and
                // the server rolls the transaction back.
                drop(deadpool_postgres::Object::take(client));
            }
        }
    }
}

#[async_trait]
impl Conn for Tx {
    async fn prepare_cached(&self, sql: &str) -> Result<Statement, Error> {
        deadpool_postgres::ClientWrapper::prepare_cached(self.client(), sql).await
    }
    async fn query(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.begin_with(tokio_postgres::Client::query(self.client(), stmt, params))
            .await
    }
    async fn query_opt(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        self.begin_with(tokio_postgres::Client::query_opt(
            self.client(),
            stmt,
            params,
        ))
        .await
    }
    async fn execute(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        self.begin_with(tokio_postgres::Client::execute(self.client(), stmt, params))
            .await
    }
    async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.begin_with(tokio_postgres::Client::batch_execute(self.client(), sql))
            .await
    }
}
