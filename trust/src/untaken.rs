//! Owns one reading of a failed call: the server never took it, so sending it again
//! cannot act twice.
//!
//! A server that drains a connection (an agent replacing itself, or stopping) says, in
//! its last GOAWAY, the highest stream it took; a call that was already on its way on a
//! higher stream is refused by that GOAWAY, and HTTP/2 guarantees the server did nothing
//! with it. gRPC clients retry such a call transparently; tonic does not, and reports it
//! as INTERNAL "h2 protocol error", which reads like a fault of the server.

use std::error::Error as StdError;

/// Whether `error`, a failed call or anything it was caused by, is a stream the server
/// refused with its GOAWAY before taking it.
pub fn untaken(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(h2) = error.downcast_ref::<h2::Error>()
            && h2.is_go_away()
            && h2.is_remote()
        {
            return true;
        }
        next = error.source();
    }
    false
}
