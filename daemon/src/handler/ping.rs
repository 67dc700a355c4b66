use crate::connection::{ConnError, Connection};
use jobd_protocol::Response;

pub async fn handle(conn: &mut Connection) -> Result<(), ConnError> {
    conn.send(&Response::Pong).await
}
