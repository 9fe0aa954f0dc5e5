//! One repository call outside a unit of work: the connection it runs on
//! (a shared read lane or one of its own) and the client-side deadline.

use super::{missed_deadline, timed, Client, Pool};
use crate::error::Result;

impl Pool {
    /// Runs `f` on a connection of this pool: a shared lane for a read
    /// (`shared`, D-041), else a connection of its own. A call that misses
    /// the client deadline never hands its connection out again (maybe a
    /// frozen server or a dead path).
    pub(crate) async fn call<T>(
        &self,
        shared: bool,
        f: impl AsyncFnOnce(&Client<'_>) -> Result<T>,
    ) -> Result<T> {
        let conn = self.conn(shared).await?;
        let client = Client::new(&conn, self.unnamed());
        let out = match timed(self.deadline(), f(&client)).await {
            Ok(out) => {
                conn.answered();
                out
            }
            Err(d) => {
                conn.discard(d, self.label);
                Err(missed_deadline(d))
            }
        };
        self.record_usage();
        out
    }
}
